#!/usr/bin/env bash
# GPU check for `esimcse train`: trains the default model for a few hundred steps with --bf16 on the
# shared corpus, selecting on STS-B dev, for ESimCSE and SimCSE, then times training steps.
# Unattended, no network. Needs only the checkout, ../shared/data beside it, and a Python with this
# package and a CUDA build of torch installed.
#
#   PYTHON   interpreter to use                        (default: python)
#   OUT      folder for the results (JSON + metrics)   (default: ./gpu_check_out)
#   DATA     data folder                                (default: ../shared/data)
#   CORPUS   training sentences                         (default: $DATA/corpus/wiki1m_for_simcse.random10k_seed42.txt)
#   STEPS    optimizer steps per run                    (default: 300)
#   METHODS  methods to train                           (default: "esimcse simcse")
#   SPEED    1 = also run benchmarks/train_speed.py     (default: 1)
#
# Results: $OUT/gpu_check.json (sentences/s, best STS-B dev and its step, per method), $OUT/<method>.metrics.jsonl,
# $OUT/train_speed.json. Model weights stay in a temporary folder (not copied to $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT="${OUT:-./gpu_check_out}"
DATA="${DATA:-../shared/data}"
CORPUS="${CORPUS:-$DATA/corpus/wiki1m_for_simcse.random10k_seed42.txt}"
STEPS="${STEPS:-300}"
METHODS="${METHODS:-esimcse simcse}"
SPEED="${SPEED:-1}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu_check: CUDA is not available to this Python (torch %s)" % torch.__version__)
print("gpu_check: torch", torch.__version__, "on", torch.cuda.get_device_name(0), file=sys.stderr)
PY

for method in $METHODS; do
  echo "gpu_check: training $method for $STEPS steps" >&2
  "$PYTHON" -m esimcse_cli train "$CORPUS" -o "$WORK/$method" --method "$method" --bf16 --device cuda \
      --max-steps "$STEPS" --eval-steps 50 --dev-data "$DATA" --save-steps 0 --log-steps 10 --overwrite \
      > "$OUT/$method.summary.txt"
  cp "$WORK/$method/metrics.jsonl" "$OUT/$method.metrics.jsonl"
  cp "$WORK/$method/manifest.json" "$OUT/$method.manifest.json"
  # the folder must load back for encoding
  "$PYTHON" -m esimcse_cli encode - -o "$WORK/$method.npy" --model "$WORK/$method" <<< "a quick check sentence" >&2
done

if [ "$SPEED" = "1" ]; then
  "$PYTHON" benchmarks/train_speed.py --device cuda --bf16 --steps 30 --rounds 2 --json "$OUT/train_speed.json" > /dev/null
fi

OUT="$OUT" METHODS="$METHODS" "$PYTHON" - <<'PY'
import json, os, torch
out, report = os.environ["OUT"], {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": {}}
for m in os.environ["METHODS"].split():
    man = json.load(open(os.path.join(out, f"{m}.manifest.json")))
    rows = [json.loads(l) for l in open(os.path.join(out, f"{m}.metrics.jsonl"))]
    dev = [r for r in rows if "dev_spearman" in r]
    report["runs"][m] = {"steps": man["steps"], "sentences_per_s": man["sentences_per_s"], "wall_s": man["wall_s"],
                         "best_dev": man["best_dev"], "best_step": man["best_step"],
                         "dev_at_start": dev[0]["dev_spearman"] if dev else None}
speed = os.path.join(out, "train_speed.json")
if os.path.exists(speed):
    s = json.load(open(speed))
    report["speed"] = {k: s[k] for k in ("ratio_esimcse_over_simcse", "ratio_simcse_over_st_mnrl")}
    report["speed"]["variants"] = s["variants"]
with open(os.path.join(out, "gpu_check.json.tmp"), "w") as f:
    json.dump(report, f, indent=2)
os.replace(os.path.join(out, "gpu_check.json.tmp"), os.path.join(out, "gpu_check.json"))
print(json.dumps(report, indent=2))
PY
