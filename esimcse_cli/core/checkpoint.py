"""Resumable training state and the exported model, written atomically, without pickle.

Resumable state: ``OUT/state/``
    ``state.safetensors``  every tensor: the online model (``online.*``: backbone + MLP), the momentum
                           encoder (``momentum.*``), the queue (``queue``), the optimizer's per-parameter
                           tensors (``optim.<index>.<name>``, e.g. ``exp_avg``, ``step``) and the torch RNG
                           states (``rng.torch``, ``rng.cuda.<device>``).
    ``state.json``         the rest: step, data position, best dev score, the resolved config, the
                           python and numpy RNG states, corpus sha256, world size.

    The folder is written with :func:`esimcse_cli.core.atomic.atomic_dir` (a temporary folder beside
    it, then a rename), so an interruption leaves the previous state or the new one. Nothing is
    unpickled when it is read back: safetensors for tensors and JSON for the rest. The optimizer is
    rebuilt from the current run's param groups plus these saved per-parameter tensors.

    The state holds momentum and queue tensors, which the finished model folder must not contain, so
    it is deleted when a run completes (``keep_state: true`` keeps it). An interrupted run keeps it.

Exported model: the output folder's root
    :func:`export_model` writes the encoder (no MLP, no momentum encoder, no queue) with
    :func:`esimcse_cli.core.export.write_model_files` into a temporary folder inside ``OUT`` and then
    renames each file into place, so the train_config.yaml / metrics.jsonl / manifest.json beside it
    are kept and no file is ever half-written.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from esimcse_cli.core.atomic import atomic_dir, disk_errors
from esimcse_cli.core.errors import InputError, first_line

STATE_DIR = "state"
STATE_TENSORS = "state.safetensors"
STATE_META = "state.json"
STATE_FORMAT = 1


def state_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / STATE_DIR


def has_state(output_dir: str | os.PathLike) -> bool:
    d = state_dir(output_dir)
    return (d / STATE_TENSORS).is_file() and (d / STATE_META).is_file()


# ------------------------------------------------------------------------------------------- tensors
def module_tensors(prefix: str, module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A module's state dict under ``prefix.``; contiguous CPU copies (safetensors refuses shared storage)."""
    return {f"{prefix}.{k}": v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def load_module_tensors(prefix: str, module: torch.nn.Module, tensors: Dict[str, torch.Tensor]) -> None:
    sub = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing, unexpected = module.load_state_dict(sub, strict=False)
    # buffers that transformers recreates (e.g. position_ids) may legitimately be absent
    real_missing = [k for k in missing if not k.endswith("position_ids")]
    if real_missing or unexpected:
        raise InputError(f"saved state does not match the model ({prefix}): missing {real_missing[:3]}, unexpected {unexpected[:3]}")


def optimizer_tensors(opt: torch.optim.Optimizer) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    for idx, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            out[f"optim.{idx}.{name}"] = value.detach().to("cpu").contiguous().clone()
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)  # moves the tensors to each parameter's device


# ------------------------------------------------------------------------------------------- RNG
def rng_state() -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in tensors.items() if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda][: torch.cuda.device_count()])
    if "python" in meta:
        v, internal, gauss = meta["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in meta:
        name, keys, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ------------------------------------------------------------------------------------------- state dir
def save_state(output_dir: str | os.PathLike, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    """Atomically (re)write ``OUT/state`` with the given tensors and JSON metadata."""
    target = state_dir(output_dir)
    meta = dict(meta, format=STATE_FORMAT)
    with atomic_dir(target) as tmp:
        save_file(tensors, str(tmp / STATE_TENSORS))
        (tmp / STATE_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return target


def load_state(output_dir: str | os.PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    d = state_dir(output_dir)
    if not has_state(output_dir):
        raise InputError(f"{d}: no saved training state to resume from")
    try:
        meta = json.loads((d / STATE_META).read_text(encoding="utf-8"))
        tensors = load_file(str(d / STATE_TENSORS))
    except Exception as exc:  # corrupt files
        raise InputError(f"{d}: saved training state is unreadable ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise InputError(f"{d / STATE_META}: not a training state written by this version of esimcse")
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0 or not isinstance(meta.get("config"), dict):
        raise InputError(f"{d / STATE_META}: incomplete training state (no valid 'step' and 'config')")
    return tensors, meta


def recover_state(output_dir: str | os.PathLike) -> None:
    """Tidy what a save killed outright (SIGKILL, power loss) may leave beside ``OUT/state``.

    :func:`~esimcse_cli.core.atomic.atomic_dir` writes ``.state.*.tmp`` and moves the previous state to
    ``.state.*.old/x`` just before renaming the new one into place. If the state is missing but such a
    previous state is complete, it is put back; the other leftovers are removed.
    """
    out = Path(output_dir)
    if not out.is_dir():
        return
    target = state_dir(out)
    olds = sorted(out.glob(f".{STATE_DIR}.*.old"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not target.exists():
        for old in olds:
            x = old / "x"
            if (x / STATE_TENSORS).is_file() and (x / STATE_META).is_file():
                os.replace(x, target)
                break
    for leftover in [*olds, *out.glob(f".{STATE_DIR}.*.tmp"), *out.glob(".model.*.tmp")]:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def remove_state(output_dir: str | os.PathLike) -> None:
    shutil.rmtree(state_dir(output_dir), ignore_errors=True)


# ------------------------------------------------------------------------------------------- export
def export_model(output_dir: str | os.PathLike, model, tokenizer, pooling: str, max_seq_length: int, extra: Dict[str, Any] | None = None) -> Path:
    """Write the encoder as a model folder at ``output_dir``'s root, file by file atomically."""
    from transformers.utils import logging as hf_logging

    from esimcse_cli.core.export import write_model_files

    hf_logging.disable_progress_bar()
    out = Path(output_dir)
    out.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model.", suffix=".tmp", dir=out))
    try:
        with disk_errors(out):  # a full disk: `OUT: No space left on device`, not a library's traceback
            write_model_files(tmp, model, tokenizer, pooling, max_seq_length, extra)
        # weights last but one, esimcse.json last: a reader never sees a new record over old weights
        names = sorted(os.listdir(tmp), key=lambda n: (n == "esimcse.json", n.endswith(".safetensors"), n))
        for name in names:
            src, dst = tmp / name, out / name
            if src.is_dir():
                if dst.is_dir():
                    with atomic_dir(dst) as new_dir:
                        for f in src.iterdir():
                            os.replace(f, new_dir / f.name)
                else:
                    os.replace(src, dst)
            else:
                os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
