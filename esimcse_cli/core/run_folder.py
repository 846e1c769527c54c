"""A training run's output folder: taken, checked, cleared for ``--overwrite``, read back for ``--resume``.

    cfg.output_dir -> check_output_dir (a folder, or a name in an existing folder)
      -> hold_output: one run per folder (rank 0 takes the lock of :mod:`esimcse_cli.core.runlock`)
      -> prepare_output: a new run wants it empty (or --overwrite); --resume wants a saved state
      -> clear_previous_run (--overwrite): only the files a run writes, never the folder itself

    OUT/state (:mod:`esimcse_cli.core.checkpoint`) -> config_for_resume: the saved config, with the options
    of :data:`MUTABLE_ON_RESUME` taken from the command line -> the trainer checks it again against the saved
    state with the same :func:`check_resume_config`. It runs before the process group is joined, so rank 0 is
    known from torchrun's environment (:func:`launched_as_main`).

    run_config: the one entry of ``esimcse train``, a new run's config (build_config) or a resumed one's.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from esimcse_cli.core import checkpoint as ckpt
from esimcse_cli.core import distributed as distrib
from esimcse_cli.core import runlock, signals
from esimcse_cli.core.config import TrainConfig, build_config, check_values, dev_data_or_none
from esimcse_cli.core.errors import ConfigError, InputError

# Options that may differ between a saved state and the run that resumes it.
MUTABLE_ON_RESUME = {
    "corpus", "output_dir", "epochs", "max_steps", "dev_data", "eval_steps", "eval_batch_size", "log_steps",
    "save_steps", "resume", "overwrite", "device", "bf16", "keep_state", "encoding_errors", "trust_remote_code",
}

# What a run writes at the folder's root besides the model files (the model files are replaced, not removed).
RUN_FILES = ("metrics.jsonl", "manifest.json", "train_config.yaml", "esimcse.json", "README.md", "dev_curve.png")


def launched_as_main() -> bool:
    """Is this process rank 0, before the process group is joined? torchrun says so in ``$RANK`` (unset: one process).

    Once the trainer has joined the group, ``DistInfo.is_main`` answers instead.
    """
    return os.environ.get("RANK", "0") == "0"


def check_output_dir(cfg: TrainConfig) -> Path:
    """The output folder's path, refused when none is given, its parent is missing or it is a file."""
    if not cfg.output_dir:
        raise ConfigError("--output: no output folder given")
    out = Path(cfg.output_dir)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{out}: output folder's parent {parent} does not exist")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    return out


def hold_output(cfg: TrainConfig, dist: distrib.DistInfo) -> Optional[runlock.RunLock]:
    """Take the output folder for this run: rank 0 locks, every rank learns if it failed.

    Returns the lock (None on the other ranks). Raised before anything in the folder is touched: another live
    run's folder is refused with one line naming it; a stale lock (a killed run) is taken over with a warning.
    """
    lock, failure = None, None
    if dist.is_main:
        try:
            out = check_output_dir(cfg)
            with signals.held():  # a Ctrl-C is held while the lock is taken, and lands just after
                lock = runlock.acquire(out)
        except Exception as exc:
            failure = exc
        except BaseException:  # that Ctrl-C: give the lock back before it unwinds
            if lock is not None:
                lock.release()
            raise
    try:
        failed = distrib.any_rank(failure is not None, dist)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if failure is not None:
        raise failure
    if failed:
        raise InputError(f"{cfg.output_dir}: rank 0 could not take the output folder (its message says why)")
    return lock


def prepare_output(cfg: TrainConfig) -> Path:
    """The checked output folder: with a saved state for --resume, else empty unless --overwrite."""
    out = check_output_dir(cfg)
    if cfg.resume or cfg.overwrite:
        ckpt.recover_state(out)  # leftovers of a run killed mid-save (SIGKILL, power loss)
    if cfg.resume:
        if not ckpt.has_state(out):
            raise InputError(f"{out}: no saved training state to resume from ({ckpt.state_dir(out)} is missing)")
        return out
    if out.is_dir() and any(p.name != runlock.LOCK_NAME for p in out.iterdir()):  # this run's own lock does not count
        if not cfg.overwrite:
            hint = " (it holds a saved state: add --resume to continue)" if ckpt.has_state(out) else ""
            raise InputError(f"{out}: output folder exists and is not empty; pass --overwrite to replace it{hint}")
    return out


def clear_previous_run(out: Path) -> None:
    """With --overwrite: remove what an earlier run wrote (only our own files, never the whole folder).

    A stale lock (a killed run's) goes too; a live one, this run's own included, is never removed.
    """
    runlock.remove_stale(out)
    ckpt.remove_state(out)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def check_resume_config(saved: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Refuse a value in ``given`` that differs from the saved state's and is not in :data:`MUTABLE_ON_RESUME`."""
    for key, value in given.items():
        if key in MUTABLE_ON_RESUME or key not in saved:
            continue
        if saved[key] != value:
            raise ConfigError(f"--{key.replace('_', '-')}: cannot change from {saved[key]!r} to {value!r} when resuming")


def config_for_resume(output_dir: str, overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The saved run's config with ``overrides`` (only options in :data:`MUTABLE_ON_RESUME`) on top.

    A folder that a live run holds is refused before its leftovers are tidied (rank 0 holds the lock while
    tidying; under torchrun the other ranks only read).
    """
    is_main = launched_as_main()
    with runlock.acquire(output_dir) if is_main and Path(output_dir).is_dir() else nullcontext():
        if is_main:
            ckpt.recover_state(output_dir)
        _, meta = ckpt.load_state(output_dir)
    saved = check_values(meta.get("config", {}), str(ckpt.state_dir(output_dir) / ckpt.STATE_META))
    overrides = {k.replace("-", "_"): v for k, v in (overrides or {}).items() if v is not None}
    check_resume_config(saved, overrides)
    saved.update(check_values(overrides, "command line"))
    saved["resume"] = True
    saved["output_dir"] = str(output_dir)
    return TrainConfig(**saved).validate()


def run_config(values: Mapping[str, Any], config_file: Optional[str | os.PathLike] = None) -> TrainConfig:
    """The config ``esimcse train`` runs with, from the options given (``None``: not given).

    A new run's is :func:`~esimcse_cli.core.config.build_config` ``(run=True)``. With ``resume`` it is the
    saved run's in ``output_dir`` (:func:`config_for_resume`; ``config_file`` is not read), where
    ``--dev-data none`` turns selection off as it does for a new run.
    """
    if not values.get("resume"):
        return build_config(values, config_file, run=True)
    if values.get("output_dir") is None:
        raise ConfigError("--resume needs -o OUT_DIR, the folder of the interrupted run")
    cfg = config_for_resume(values["output_dir"], values)
    cfg.dev_data = dev_data_or_none(cfg.dev_data)
    return cfg
