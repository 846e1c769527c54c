#!/usr/bin/env bash
# The results study on one CUDA GPU, unattended: the same matrix (benchmarks/study.yaml) at a larger step
# budget, with bf16 autocast. For a box with no network and at most 64 MiB beside the checkout.
#
# Before (on a machine that has the package's default model installed):
#     python benchmarks/model_bf16.py pack runs/model-bf16          # ~45 MB bf16 copy; carry runs/model-bf16
# On the GPU box (torch with CUDA + transformers + safetensors + numpy/scipy/pyyaml already installed), from
# the repository root, with SentEval data and the corpus at ../shared/data (or ./shared/data, or DATA=...):
#     bash benchmarks/gpu_study.sh
# Knobs (environment): STEPS (1000), EVAL_STEPS (125), STUDY_GROUPS (core,mean_pooling,dup_rate,queue_ratio,positives),
#     DATA (../shared/data or shared/data), PYTHON (python), RESULTS (docs/results_gpu), BF16_MODEL, FP32_MODEL.
# Re-running resumes: finished cells are skipped. Results: docs/results_gpu/*.json, the `study_gpu` section of
# docs/RESULTS.md and docs/study_gpu_*.png. The log is runs/gpu_study.log.
#
# Precision: the bf16 copy is turned back into float32 weights before training (model_bf16.py unpack), so the
# parameters and the AdamW state stay float32; --bf16 only autocasts the forward/backward matrix products.
# Never run --bf16 on a CPU (bf16 matmuls are ~500x slower there than float32).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
STEPS=${STEPS:-1000}
EVAL_STEPS=${EVAL_STEPS:-125}
STUDY_GROUPS=${STUDY_GROUPS:-core,mean_pooling,dup_rate,queue_ratio,positives}
if [ -z "${DATA:-}" ]; then
  if [ -d ../shared/data/senteval ]; then DATA=../shared/data; elif [ -d shared/data/senteval ]; then DATA=shared/data; else DATA=../shared/data; fi
fi
RESULTS=${RESULTS:-docs/results_gpu}
BF16_MODEL=${BF16_MODEL:-runs/model-bf16}
FP32_MODEL=${FP32_MODEL:-runs/model-fp32}
# 10k random wiki1m lines + the first 1.28 MB of wiki1m (its last line is cut at the byte limit: dropped)
CORPUS=${CORPUS:-$DATA/corpus/wiki1m_for_simcse.random10k_seed42.txt,$DATA/corpus/wiki1m_for_simcse.first1280000bytes.txt:drop-last}
mkdir -p runs
LOG=${LOG:-runs/gpu_study.log}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec > >(tee -a "$LOG") 2>&1
echo "== gpu_study $(date -u +%FT%TZ): steps $STEPS, eval every $EVAL_STEPS, groups $STUDY_GROUPS, data $DATA"

"$PY" - <<'EOF'
import sys, torch, transformers
if not torch.cuda.is_available():
    sys.exit("gpu_study: no CUDA device visible to torch; this script is for a GPU machine")
print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}")
EOF

# our package, without touching the installed dependencies (no network); the checkout works on PYTHONPATH anyway
"$PY" -m pip install --no-deps --no-build-isolation -q -e . || echo "pip install -e . failed; running from the checkout"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ ! -f "$FP32_MODEL/model.safetensors" ]; then
  if [ ! -f "$BF16_MODEL/model.safetensors" ]; then
    echo "gpu_study: $BF16_MODEL is missing: run 'python benchmarks/model_bf16.py pack $BF16_MODEL' where the default model is installed, and carry it" >&2
    exit 2
  fi
  "$PY" benchmarks/model_bf16.py unpack "$BF16_MODEL" "$FP32_MODEL"
fi

if [ ! -d "$DATA/senteval" ]; then
  echo "gpu_study: no SentEval data at $DATA/senteval; set DATA=<folder holding senteval/ and corpus/>" >&2
  exit 2
fi

"$PY" benchmarks/study.py --only "$STUDY_GROUPS" --data-dir "$DATA" --model "$FP32_MODEL" --bf16 --device cuda \
  --steps "$STEPS" --eval-steps "$EVAL_STEPS" --corpus "$CORPUS" \
  --results-dir "$RESULTS" --runs-dir runs/study-gpu --section study_gpu --plots-dir docs

echo "== gpu_study done $(date -u +%FT%TZ): results in $RESULTS, section study_gpu of docs/RESULTS.md"
echo "   bring back: $RESULTS/*.json docs/RESULTS.md docs/study_gpu_*.png (or rerun: python benchmarks/study.py --report-only --results-dir $RESULTS --section study_gpu)"
