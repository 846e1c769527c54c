"""``esimcse train``: the training loop, top to bottom.

    corpus -> seeded permutation -> batch of sentences -> token ids (truncated to max_length)
      -> view 1: the ids;  view 2: the same ids again (SimCSE) or with word repetition (ESimCSE)
      -> online encoder (+ training MLP) on both views        (dropout makes SimCSE's two views differ)
      -> [momentum encoder on view 1, no grad]                 (official variant: EMA first, then this)
      -> InfoNCE over in-batch positives ++ queue negatives
      -> backward -> (gradient accumulation) -> clip -> optimizer step -> learning-rate schedule
      -> [EMA update of the momentum encoder]                  (paper variant: after each optimizer step)
      -> enqueue the momentum embeddings
      -> every eval_steps: STS-B dev Spearman, save the best model
      -> every save_steps: resumable state

Decisions worth knowing (see also the README section):

* **Corpus.** Read once through :mod:`esimcse_cli.core.corpus` into a spool file (one sentence per
  line, on disk) while recording each kept line's byte offset in a compact array (8 bytes a line).
  Blank lines are skipped and counted; ``dedupe`` drops exact repeats (first occurrence kept, by
  8-byte hashes). Each epoch is a seeded permutation of the offsets; a batch is read by seeking.
  Memory does not hold the corpus or its tokens. The data position is the number of micro-batches
  consumed. The last incomplete batch of an epoch is dropped (a fixed batch keeps the queue and the
  in-batch negatives the same size).
* **Repetition** runs on token ids after truncation to ``max_length``. ``[CLS]``/``[SEP]`` (all
  special tokens) are never repeated and do not count in the sentence length ``N``; the repeated
  copy may grow beyond ``max_length`` by the repeated count and is not re-truncated (as in the paper:
  the point is a positive of a different length). Repetition randomness is seeded per batch, so
  a batch's positives do not depend on how many processes run.
* **Forwards.** Both views run through the online encoder together, as SimCSE does: 2B rows, the ids twice
  (SimCSE) or the originals and their repeated copies (ESimCSE). The momentum encoder sees the B originals.
  Each of the two runs as a few length groups (:func:`esimcse_cli.core.padding.forward_by_length`), each padded
  to its own longest row, rows back in order afterwards: the same representations and loss, fewer padded
  positions (ESimCSE's copies are longer than the originals, so one padded forward wastes most). With dropout
  on, the masks are drawn per group, from the same distribution. ``split_by_length=False``: one padded
  forward each.
* **Randomness.** The torch generator (dropout) is re-seeded from (seed, micro-batch, rank) before each
  micro-batch, so a resumed run and an uninterrupted one draw the same dropout masks. All RNG states are
  saved with the state anyway.
* **Gradient accumulation** sums ``grad_accum`` micro-batches of ``batch_size`` per optimizer step; the
  in-batch negatives of each micro-batch are its own ``batch_size`` sentences.
* **Distributed.** ``batch_size`` is the global batch; each of N ranks encodes ``batch_size / N`` of it.
  See :mod:`esimcse_cli.core.distributed`.
* **Model selection.** With ``dev_data``, STS-B dev is scored at step 0 (recorded, not a candidate),
  every ``eval_steps`` and at the last step; the best scoring model is written to the output folder.
  Without it, the last model is written at the end.
"""

from __future__ import annotations

import array
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from esimcse_cli.core import checkpoint as ckpt
from esimcse_cli.core import distributed as distrib
from esimcse_cli.core.atomic import atomic_write_text
from esimcse_cli.core.card import write_card
from esimcse_cli.core.config import AUTO_POOLER, TrainConfig, check_values, to_cli_args, write_config
from esimcse_cli.core.contrastive import ContrastiveModel
from esimcse_cli.core.errors import ConfigError, EsimcseError, InputError
from esimcse_cli.core.loss import contrastive_loss
from esimcse_cli.core.momentum import MomentumEncoder, NegativeQueue
from esimcse_cli.core.padding import forward_by_length, overhead_for

log = logging.getLogger("esimcse")

# Options that may differ between a saved state and the run that resumes it.
MUTABLE_ON_RESUME = {
    "corpus", "output_dir", "epochs", "max_steps", "dev_data", "eval_steps", "eval_batch_size", "log_steps",
    "save_steps", "resume", "overwrite", "device", "bf16", "keep_state", "encoding_errors", "trust_remote_code",
}


class TrainInterrupted(EsimcseError):
    """SIGINT/SIGTERM arrived: state was saved; exit code 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class NonFiniteLoss(EsimcseError):
    """The loss became NaN or infinite; training stopped without saving the faulty step."""

    exit_code = 3


@dataclass
class TrainResult:
    output_dir: str
    step: int
    total_steps: int
    best_dev: Optional[float]
    best_step: Optional[int]
    last_loss: Optional[float]
    stopped: Optional[str]  # None (finished), "callback"
    wall_s: float
    sentences_per_s: float
    n_sentences: int
    metrics: List[Dict[str, Any]] = field(default_factory=list)
    start_dev: Optional[float] = None  # STS-B dev of the starting model, scored with the exported pooling
    pooler: Optional[str] = None  # the training pooler (``auto`` resolved)
    pooler_source: Optional[str] = None  # why that pooler
    export_pooling: Optional[str] = None  # the pooling the output folder records

    @property
    def kept_start(self) -> bool:
        """No step beat the starting model on STS-B dev: the output folder holds the starting weights."""
        return self.best_step == 0


# =============================================================================== corpus
class CorpusIndex:
    """Kept sentences of a corpus, spooled to disk, addressed by an offsets array."""

    def __init__(self, spool: Path, offsets: np.ndarray, stats: Dict[str, Any]):
        self.spool = spool
        self.offsets = offsets
        self.stats = stats
        self._fh = open(spool, "rb")

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def get(self, indices: Sequence[int]) -> List[str]:
        out = []
        for i in indices:
            self._fh.seek(int(self.offsets[i]))
            out.append(self._fh.readline().rstrip(b"\n").decode("utf-8"))
        return out

    def close(self) -> None:
        self._fh.close()

    @classmethod
    def build(cls, source: str, workdir: Path, text_column: Optional[str] = None, encoding_errors: str = "strict", dedupe: bool = False,
              stop: Optional[Callable[[], bool]] = None) -> "CorpusIndex":
        """Spool ``source``; ``stop()`` is polled every 64k lines and, when true, raises :class:`KeyboardInterrupt`."""
        from esimcse_cli.core.corpus import iter_texts, materialize

        display = "<stdin>" if str(source) == "-" else str(source)
        spool = workdir / "corpus.spool.txt"
        offsets = array.array("q")
        hashes = array.array("Q") if dedupe else None
        n_lines = n_blank = 0
        sha = hashlib.sha256()
        with materialize(source) as path:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    sha.update(block)
            pos = 0
            with open(spool, "wb") as out:
                for _, text in iter_texts(path, text_column, encoding_errors, display=display):
                    n_lines += 1
                    if stop is not None and not n_lines & 0xFFFF and stop():
                        raise KeyboardInterrupt
                    if not text.strip():
                        n_blank += 1
                        continue
                    data = (text.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8")
                    if hashes is not None:
                        hashes.append(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))
                    offsets.append(pos)
                    out.write(data)
                    pos += len(data)
        off = np.frombuffer(offsets, dtype=np.int64).copy()
        n_dupes = 0
        if hashes is not None and len(off):
            h = np.frombuffer(hashes, dtype=np.uint64)
            _, first = np.unique(h, return_index=True)
            keep = np.sort(first)
            n_dupes = int(len(off) - len(keep))
            off = off[keep]
        stats = {"lines": n_lines, "blank": n_blank, "duplicates": n_dupes, "sentences": int(len(off)), "sha256": sha.hexdigest(), "source": display}
        return cls(spool, off, stats)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


# =============================================================================== batching
class Batcher:
    """Tokenise a batch once and build its second view (padding: :mod:`esimcse_cli.core.padding`)."""

    def __init__(self, tokenizer, cfg: TrainConfig, position_limit: Optional[int] = None):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.limit = position_limit
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
        self.special_ids = set(int(i) for i in tokenizer.all_special_ids)
        self.insert = None
        if cfg.augmentation == "insertion":
            from esimcse_cli.core.augment import make_inserter

            self.insert = make_inserter(cfg.insert_token, tokenizer, level="subword", as_ids=True)

    def tokenize(self, texts: List[str]) -> List[List[int]]:
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=self.cfg.max_length, padding=False,
                             return_attention_mask=False, return_token_type_ids=False)
        ids = enc["input_ids"]
        if self.limit is not None and self.cfg.repetition and self.cfg.augmentation != "deletion":
            ids = [fit_for_copy(x, self.limit, self._most_added, self.special_ids, self.cfg.repetition_variant) for x in ids]
        return ids

    def _most_added(self, n: int) -> int:
        """The most tokens the second view can add to a sentence of ``n`` content tokens."""
        from esimcse_cli.core.augment import repeat_support

        return max(repeat_support(n, self.cfg.dup_rate, self.cfg.repetition_variant))

    def repeat(self, ids: List[List[int]], seed: int) -> List[List[int]]:
        """The second view: word repetition (or the insertion/deletion baselines) over content tokens."""
        from esimcse_cli.core.augment import augment_batch

        return augment_batch(ids, self.cfg.augmentation, self.cfg.dup_rate, self.cfg.repetition_variant, random.Random(seed),
                             special_ids=self.special_ids, insert=self.insert)


def fit_for_copy(ids: List[int], limit: int, most_added: Callable[[int], int], special_ids: set, variant: str = "paper") -> List[int]:
    """Truncate a sentence so that its repeated (or inserted-into) copy fits in ``limit`` positions.

    The copy is never cut: it must stay longer than the original, which is the point of word repetition.
    Only a sentence within ``most_added(N)`` tokens of the model's position limit is shortened: content tokens
    go from the end, to the longest ``N`` with ``len + most_added(N) <= limit``, and what follows the last
    content token ([SEP]) is kept. ``N`` counts what the second view counts
    (:func:`~esimcse_cli.core.augment.content_positions` of ``variant``).
    """
    if len(ids) + most_added(len(ids)) <= limit:  # N <= len(ids), and most_added grows with N
        return ids
    from esimcse_cli.core.augment import content_positions

    content = content_positions(ids, special_ids, variant)
    if not content:
        return ids
    tail = ids[content[-1] + 1 :]

    def head(m: int) -> int:  # the prefix that holds the first m content tokens
        return content[m - 1] + 1 if m else content[0]

    m = len(content)
    while m > 0 and head(m) + len(tail) + most_added(m) > limit:
        m -= 1
    return ids[: head(m)] + tail


# =============================================================================== helpers
def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up over ``warmup`` steps, then constant or linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.weight_decay > 0:
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
        groups = [
            {"params": [p for n, p in params if not any(k in n for k in no_decay)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in params if any(k in n for k in no_decay)], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": [p for _, p in params], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)


def package_versions() -> Dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("esimcse-cli", "torch", "transformers", "numpy", "safetensors", "tokenizers", "sentence-transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class _SignalCatcher:
    """Turn SIGINT/SIGTERM into a flag checked at step boundaries (main thread only).

    A second signal of the same kind falls through to the previous handler (a forced stop).
    """

    def __init__(self):
        self.signum: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # second time: restore the previous handler and let it act now
            old = self._old.get(signum)
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
            log.warning("%s again: stopping now; the last complete state (if any) is kept", signal.Signals(signum).name)
            if callable(old):  # the CLI's handler (exit 130/143 after clean-up) or Python's KeyboardInterrupt
                old(signum, frame)
                return
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)  # SIG_DFL: die now; a state folder is only ever swapped in whole
            return
        self.signum = signum
        log.warning("%s received: finishing this step and saving state (send it again to stop at once)", signal.Signals(signum).name)

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        return False


def settle_pooler(cfg: TrainConfig) -> tuple:
    """``(cfg, why)`` with ``--pooler auto`` replaced by :func:`~esimcse_cli.core.contrastive.choose_pooler`'s choice.

    An explicit ``--pooler`` is kept as it is. The choice is written into the run's config, so
    ``train_config.yaml``, the saved state and ``--resume`` all see the pooler that was trained.
    """
    if cfg.resume:
        return cfg, "as the run being resumed chose it"
    if cfg.pooler != AUTO_POOLER:
        return cfg, "given with --pooler (or in --config)"
    from esimcse_cli.core.contrastive import choose_pooler

    pooler, why = choose_pooler(cfg.model, cfg.preset)
    return dataclasses.replace(cfg, pooler=pooler).resolved(), why


# =============================================================================== dev evaluation
def make_dev_scorer(cfg: TrainConfig) -> Optional[Callable[[Any], float]]:
    """STS-B dev Spearman x100 through the evaluation core (exactly what ``eval-sts`` reports)."""
    if not cfg.dev_data:
        return None
    from esimcse_cli.core.evaluate import PairScorer
    from esimcse_cli.core.sts import load_task

    scorer = PairScorer(load_task(cfg.dev_data, "STSBenchmark", split="dev"))

    def score(encoder) -> float:
        return float(scorer(encoder, batch_size=cfg.eval_batch_size))

    return score


# =============================================================================== output folder
def _check_output_dir(cfg: TrainConfig) -> Path:
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


def _hold_output(cfg: TrainConfig, dist) -> Any:
    """Take the output folder for this run (:mod:`esimcse_cli.core.runlock`): rank 0 locks, every rank learns if it failed.

    Returns the lock (None on the other ranks). Raised before anything in the folder is touched: another live
    run's folder is refused with one line naming it; a stale lock (a killed run) is taken over with a warning.
    """
    from esimcse_cli.core import runlock
    from esimcse_cli.core.atomic import _signals_held

    lock, failure = None, None
    if dist.is_main:
        try:
            out = _check_output_dir(cfg)
            with _signals_held():  # a Ctrl-C is held while the lock is taken, and lands just after
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
    from esimcse_cli.core.runlock import LOCK_NAME

    out = _check_output_dir(cfg)
    if cfg.resume or cfg.overwrite:
        ckpt.recover_state(out)  # leftovers of a run killed mid-save (SIGKILL, power loss)
    if cfg.resume:
        if not ckpt.has_state(out):
            raise InputError(f"{out}: no saved training state to resume from ({ckpt.state_dir(out)} is missing)")
        return out
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):  # this run's own lock does not count
        if not cfg.overwrite:
            hint = " (it holds a saved state: add --resume to continue)" if ckpt.has_state(out) else ""
            raise InputError(f"{out}: output folder exists and is not empty; pass --overwrite to replace it{hint}")
    return out


def clear_previous_run(out: Path) -> None:
    """With --overwrite: remove what an earlier run wrote (only our own files, never the whole folder).

    A stale lock (a killed run's) goes too; a live one, this run's own included, is never removed.
    """
    from esimcse_cli.core import runlock

    runlock.remove_stale(out)
    ckpt.remove_state(out)
    for name in ("metrics.jsonl", "manifest.json", "train_config.yaml", "esimcse.json", "README.md", "dev_curve.png"):
        (out / name).unlink(missing_ok=True)


def config_for_resume(output_dir: str, overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The saved run's config with ``overrides`` (only options in :data:`MUTABLE_ON_RESUME`) on top.

    A folder that a live run holds is refused before its leftovers are tidied (rank 0 holds the lock while
    tidying; under torchrun the other ranks only read).
    """
    from contextlib import nullcontext

    from esimcse_cli.core import runlock

    main_rank = os.environ.get("RANK", "0") == "0"
    with runlock.acquire(output_dir) if main_rank and Path(output_dir).is_dir() else nullcontext():
        if main_rank:
            ckpt.recover_state(output_dir)
        _, meta = ckpt.load_state(output_dir)
    saved = check_values(meta.get("config", {}), str(ckpt.state_dir(output_dir) / ckpt.STATE_META))
    overrides = {k.replace("-", "_"): v for k, v in (overrides or {}).items() if v is not None}
    for key, value in overrides.items():
        if key not in MUTABLE_ON_RESUME and key in saved and saved[key] != value:
            raise ConfigError(f"--{key.replace('_', '-')}: cannot change from {saved[key]!r} to {value!r} when resuming")
    saved.update(check_values(overrides, "command line"))
    saved["resume"] = True
    saved["output_dir"] = str(output_dir)
    return TrainConfig(**saved).validate()


# =============================================================================== the loop
def train(
    cfg: TrainConfig,
    on_start: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_step: Optional[Callable[[Dict[str, Any]], None]] = None,
    should_stop: Optional[Callable[[int], bool]] = None,
    command: Optional[List[str]] = None,
) -> TrainResult:
    """Train per ``cfg`` and write the output folder. See the module docstring.

    ``on_start(info)`` gets ``total_steps``, ``start_step``, corpus statistics, the queue size and device.
    ``on_step(metrics)`` gets, after every optimizer step: ``step``, ``total_steps``, ``loss``, ``lr``,
    ``sentences_per_s``, ``best_dev``; plus ``dev_spearman`` at evaluation steps.
    ``should_stop(step)`` returning True saves the state and returns (``result.stopped == "callback"``).
    SIGINT/SIGTERM save the state and raise :class:`TrainInterrupted`; a NaN/inf loss raises
    :class:`NonFiniteLoss`. Only callbacks of rank 0 are called.
    """
    cfg = cfg.resolved().validate()
    t_start = time.time()
    use_cuda = _wants_cuda(cfg)
    dist = distrib.init(use_cuda)
    lock = None
    try:
        # one run per output folder, held from here to the end however the run ends (core/runlock.py)
        lock = _hold_output(cfg, dist)
        with _SignalCatcher() as signals, tempfile.TemporaryDirectory(prefix="esimcse-train-") as work:
            return _train(cfg, dist, Path(work), signals, on_start, on_step, should_stop, command, t_start)
    finally:
        if lock is not None:
            lock.release()  # and the folder, if it was made only for the lock and nothing was written
        distrib.shutdown(dist)


def _wants_cuda(cfg: TrainConfig) -> bool:
    if cfg.device == "auto":
        return torch.cuda.is_available()
    return cfg.device.startswith("cuda")


def _train(cfg, dist, work, signals, on_start, on_step, should_stop, command, t_start) -> TrainResult:
    from esimcse_cli.core.encoder import SentenceEncoder
    from esimcse_cli.core.models import check_model, load_backbone, position_limit, resolve_device

    main = dist.is_main
    # ---- device and precision
    device = resolve_device(cfg.device)
    if dist.enabled and device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"
    if cfg.bf16 and not device.startswith("cuda"):
        raise ConfigError("--bf16 needs a CUDA device: bf16 matrix products are far slower than float32 on CPU")
    if cfg.batch_size % dist.world_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({dist.world_size})")
    if dist.enabled and (cfg.corpus in (None, "-")):
        raise ConfigError("reading the corpus from stdin is not supported with several processes; give a file")
    if cfg.corpus is None:
        raise ConfigError("no corpus given")

    # ---- output folder and saved state
    out = prepare_output(cfg)
    saved_tensors, saved_meta = ckpt.load_state(out) if cfg.resume else ({}, {})
    if cfg.resume:
        _check_resume_config(cfg, saved_meta)

    score_dev = make_dev_scorer(cfg) if main else None  # bad dev data fails here, before the slow parts
    check_model(cfg.model)  # a broken model folder fails here, before the corpus is spooled (cheap: no weights read)
    limit = position_limit(cfg.model, cfg.trust_remote_code)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(f"--max-length {cfg.max_length}: the model takes at most {limit} tokens (its position embeddings)")
    cfg, pooler_source = settle_pooler(cfg)

    # ---- corpus
    # a single process stops reading a long corpus on the first signal (several processes must meet at the
    # collective check below, so they read to the end)
    stop_spool = None if dist.enabled else (lambda: signals.signum is not None)
    try:
        corpus = CorpusIndex.build(cfg.corpus, work, cfg.text_column, cfg.encoding_errors, cfg.dedupe, stop=stop_spool)
    except KeyboardInterrupt:
        if signals.signum is None:
            raise
        name = signal.Signals(signals.signum).name
        raise TrainInterrupted(f"{name} while reading the corpus: nothing trained, nothing saved", signals.signum) from None
    n = len(corpus)
    if cfg.resume and saved_meta.get("corpus_sha256") != corpus.stats["sha256"]:
        raise InputError(f"{corpus.stats['source']}: not the corpus the saved state was trained on (sha256 differs)")
    per_rank = cfg.batch_size // dist.world_size
    micro_per_epoch = n // cfg.batch_size
    if n == 0:
        raise InputError(f"{corpus.stats['source']}: no sentences to train on (the corpus is empty or has only blank lines)")
    if micro_per_epoch < 1:
        raise InputError(f"{corpus.stats['source']}: {n} usable sentences, fewer than one batch of {cfg.batch_size}")
    total = cfg.max_steps if cfg.max_steps else (cfg.epochs * micro_per_epoch) // cfg.grad_accum
    if total < 1:
        raise InputError(f"{corpus.stats['source']}: {n} sentences give no full optimizer step (batch {cfg.batch_size} x grad-accum {cfg.grad_accum})")

    # ---- models
    b = load_backbone(cfg.model, device=device, trust_remote_code=cfg.trust_remote_code, dropout=cfg.dropout)
    tokenizer, export_len = b.tokenizer, b.max_length
    online = ContrastiveModel(b.model, cfg.pooler, bool(cfg.mlp), seed=cfg.seed).to(device)
    online.train()
    momentum = MomentumEncoder(online, cfg.momentum, cfg.momentum_variant, seed=cfg.seed) if cfg.momentum_queue else None
    queue = NegativeQueue(cfg.effective_queue_size(), int(b.model.config.hidden_size), device=device) if cfg.momentum_queue else None
    opt = make_optimizer(online, cfg)
    batcher = Batcher(tokenizer, cfg, limit)
    eval_encoder = SentenceEncoder(tokenizer, online.backbone, online.test_pooling, export_len, device=device, name=b.name)

    # ---- restore
    step, best_dev, best_step, start_dev = 0, None, None, None
    metrics: List[Dict[str, Any]] = []
    if cfg.resume:
        try:
            ckpt.load_module_tensors("online", online, saved_tensors)
            if momentum is not None:
                ckpt.load_module_tensors("momentum", momentum, saved_tensors)
                queue.load_state_tensor(saved_tensors["queue"])
            ckpt.load_optimizer_tensors(opt, saved_tensors)
            ckpt.set_rng_state(saved_tensors, saved_meta.get("rng", {}))
        except (EsimcseError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # a state edited or of another model
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"{ckpt.state_dir(out)}: saved state does not match this model and config ({type(exc).__name__}: {first})") from None
        step = int(saved_meta["step"])
        best_dev, best_step = saved_meta.get("best_dev"), saved_meta.get("best_step")
        start_dev = saved_meta.get("start_dev")
        metrics = _read_metrics(out / "metrics.jsonl", step)
        if step >= total:
            log.warning("the saved state is at step %d, which is not below the %d steps asked for; nothing to train", step, total)
    del saved_tensors

    # ---- a signal during the set-up: stop before anything is written (the output folder stays as it was)
    if distrib.any_rank(signals.signum is not None, dist):
        name = signal.Signals(signals.signum or signal.SIGINT).name
        raise TrainInterrupted(f"{name} before the first step: nothing trained, nothing written", signals.signum or signal.SIGINT)

    if main and not cfg.dev_data:
        log.warning("no STS-B dev data, so no model selection: the model after the last step is written "
                    "(give --dev-data with SentEval's data folder, or set ESIMCSE_DATA_DIR)")

    # ---- files written before training
    manifest = {
        "command": command if command is not None else sys.argv,
        "equivalent_command": ["esimcse", "train"] + to_cli_args(cfg),
        "seed": cfg.seed,
        "corpus": corpus.stats,
        "model": b.name,
        "model_path": b.path,
        "device": device,
        "world_size": dist.world_size,
        "versions": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed_from_step": step if cfg.resume else None,
        "pooler": {"train": cfg.pooler, "mlp": bool(cfg.mlp), "exported": cfg.test_pooling, "why": pooler_source},
    }
    if main:
        out.mkdir(exist_ok=True)
        if cfg.overwrite and not cfg.resume:
            clear_previous_run(out)
        write_config(cfg, out / "train_config.yaml")
        _write_json(out / "manifest.json", manifest)
        _write_metrics(out / "metrics.jsonl", metrics)
    distrib.barrier(dist)

    info = {"total_steps": total, "start_step": step, "corpus": corpus.stats, "queue_size": queue.size if queue is not None else 0,
            "device": device, "world_size": dist.world_size, "output_dir": str(out), "model": b.name,
            "pooler": cfg.pooler, "mlp": bool(cfg.mlp), "pooler_source": pooler_source, "export_pooling": cfg.test_pooling}
    if main and on_start:
        on_start(info)

    # ---- helpers closed over the run
    def save_state() -> None:
        if not main:
            return
        tensors = ckpt.module_tensors("online", online)
        if momentum is not None:
            tensors.update(ckpt.module_tensors("momentum", momentum))
            tensors["queue"] = queue.state_tensor()
        tensors.update(ckpt.optimizer_tensors(opt))
        rng_t, rng_m = ckpt.rng_state()
        tensors.update(rng_t)
        meta = {"step": step, "micro_batches": step * cfg.grad_accum, "best_dev": best_dev, "best_step": best_step, "start_dev": start_dev,
                "config": cfg.to_dict(), "rng": rng_m, "corpus_sha256": corpus.stats["sha256"], "world_size": dist.world_size}
        ckpt.save_state(out, tensors, meta)

    def export(extra_step: int, dev: Optional[float]) -> None:
        extra = {"base_model": b.name, "method": cfg.method, "step": extra_step, "dev_spearman": dev,
                 "train_pooler": cfg.pooler, "mlp_in_training": bool(cfg.mlp)}
        ckpt.export_model(out, online.backbone, tokenizer, online.test_pooling, export_len, extra)

    def evaluate() -> Optional[float]:
        if score_dev is None:
            return None
        return score_dev(eval_encoder)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 else _null()
    overhead = overhead_for(device) if cfg.split_by_length else None  # None: one padded forward per view pair
    momentum_fn = (lambda x, m: momentum(x, m, online)) if momentum is not None else None
    params = [p for p in online.parameters() if p.requires_grad]

    if main and score_dev is not None and step == 0:
        # the starting model is the first candidate, scored with the pooling that is exported: a run whose
        # steps all score lower leaves the starting weights in the output folder
        start_dev = evaluate()
        start_dev = start_dev if start_dev is not None and math.isfinite(start_dev) else None
        if start_dev is not None:
            best_dev, best_step = start_dev, 0
            export(0, start_dev)
        metrics.append({"step": 0, "dev_spearman": start_dev, "best_dev": best_dev, "best_step": best_step})
        _write_metrics(out / "metrics.jsonl", metrics)
        if on_step:
            on_step({"step": 0, "total_steps": total, "dev_spearman": start_dev, "best_dev": best_dev})

    # ---- the loop
    if distrib.any_rank(signals.signum is not None, dist):
        name = signal.Signals(signals.signum or signal.SIGINT).name
        raise TrainInterrupted(f"{name} before the first step: nothing trained, nothing saved", signals.signum or signal.SIGINT)
    stopped = None
    last_loss = None
    window_loss, window_n, window_t = 0.0, 0, time.time()
    run_t, run_sentences = time.time(), 0
    order, order_epoch = None, -1
    while step < total:
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, total, cfg.warmup, cfg.scheduler)
        step_loss = 0.0
        for micro_i in range(cfg.grad_accum):
            micro = step * cfg.grad_accum + micro_i
            epoch, pos = divmod(micro, micro_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(n, cfg.seed, epoch), epoch
            texts = corpus.get(order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size])
            torch.manual_seed(_seed_for(cfg.seed, micro, dist.rank))

            # two views of the global batch; this rank encodes its slice
            ids = batcher.tokenize(texts)
            ids2 = batcher.repeat(ids, _seed_for(cfg.seed, micro, 10**6)) if cfg.repetition else None
            mine = slice(dist.rank * per_rank, (dist.rank + 1) * per_rank)
            ids, ids2 = ids[mine], (ids2[mine] if ids2 is not None else None)

            if momentum is not None and cfg.momentum_variant == "official":
                momentum.update(online)  # official: EMA inside the forward, before this step's update
            with autocast:
                # one forward over both views, [batch; batch] (SimCSE: dropout makes them differ) or
                # [batch; repeated copies] (ESimCSE), run as a few length groups to pad less
                z = forward_by_length(online, ids + (ids2 if ids2 is not None else ids), batcher.pad_id, device, overhead)
                z1, z2 = z[:per_rank], z[per_rank:]
                keys = forward_by_length(momentum_fn, ids, batcher.pad_id, device, overhead) if momentum is not None else None
            z1, z2 = distrib.gather_with_grad(z1, dist), distrib.gather_with_grad(z2, dist)
            loss = contrastive_loss(z1, z2, queue.tensor() if queue is not None else None, cfg.temperature)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(_nan_message(value, step + 1, out, best_step))
            (loss / cfg.grad_accum).backward()
            if queue is not None:
                queue.enqueue(distrib.gather(keys, dist))
            step_loss += value / cfg.grad_accum

        distrib.all_reduce_grads(params, dist)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        # zero in place rather than free: gradients re-allocated every step (the size of the model) are
        # fresh pages on CPU, one page fault per 4 KiB (measured: ~10,000 fewer faults a step; same memory)
        opt.zero_grad(set_to_none=False)
        if momentum is not None and cfg.momentum_variant == "paper":
            momentum.update(online)  # paper: EMA after each optimizer step
        step += 1
        last_loss = step_loss

        # ---- bookkeeping: metrics, evaluation, saving, stopping
        dt = time.time() - t0
        sentences = cfg.batch_size * cfg.grad_accum
        run_sentences += sentences
        window_loss, window_n = window_loss + step_loss, window_n + 1
        row: Dict[str, Any] = {"step": step, "total_steps": total, "loss": step_loss, "lr": opt.param_groups[0]["lr"],
                               "sentences_per_s": sentences / dt if dt > 0 else None, "best_dev": best_dev}
        write = False
        if main and cfg.log_steps and (step % cfg.log_steps == 0 or step == total):
            now = time.time()
            metrics.append({"step": step, "epoch": (step * cfg.grad_accum) / micro_per_epoch, "loss": window_loss / window_n,
                            "lr": row["lr"], "sentences_per_s": window_n * sentences / max(now - window_t, 1e-9),
                            "elapsed_s": now - t_start})
            window_loss, window_n, window_t = 0.0, 0, now
            write = True
        if score_dev is not None or (cfg.dev_data and not main):
            if (cfg.eval_steps and step % cfg.eval_steps == 0) or step == total:
                if main:
                    dev = evaluate()
                    row["dev_spearman"] = dev
                    dev = None if dev is None or not math.isfinite(dev) else dev  # NaN (constant vectors): no candidate
                    improved = dev is not None and (best_dev is None or dev > best_dev)
                    if improved:
                        best_dev, best_step = dev, step
                        export(step, dev)
                    row["best_dev"] = best_dev
                    metrics.append({"step": step, "dev_spearman": dev, "best_dev": best_dev, "best_step": best_step})
                    write = True
                distrib.barrier(dist)
        if write:
            _write_metrics(out / "metrics.jsonl", metrics)
        if main and on_step:
            on_step(row)

        stop_now = step < total and distrib.any_rank(signals.signum is not None or bool(should_stop and main and should_stop(step)), dist)
        if stop_now or (cfg.save_steps and step % cfg.save_steps == 0 and step < total):
            save_state()
            distrib.barrier(dist)
        if stop_now:
            stopped = "signal" if signals.signum is not None else "callback"
            break

    # ---- the end
    wall = time.time() - t_start
    sps = run_sentences / max(time.time() - run_t, 1e-9)
    if stopped is None and main:
        if score_dev is None:  # no selection in this run (also a --resume with --dev-data none): the last step
            export(step, None)
            best_dev, best_step = None, None
        elif best_step is None:  # resumed at the end, or nothing evaluated: keep the current weights
            export(step, None)
        if not cfg.keep_state:
            ckpt.remove_state(out)
    if main:
        manifest.update({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": step, "total_steps": total,
                         "start_dev": start_dev, "best_dev": best_dev, "best_step": best_step,
                         "kept_starting_model": best_step == 0, "wall_s": wall, "sentences_per_s": sps, "stopped": stopped})
        _write_json(out / "manifest.json", manifest)
        write_card(out)  # README.md (+ dev_curve.png): the model card, from the files above; never fails the run
    corpus.close()
    distrib.barrier(dist)
    if stopped == "signal":
        name = signal.Signals(signals.signum).name
        raise TrainInterrupted(f"{name} at step {step}/{total}: state saved in {ckpt.state_dir(out)}; continue with --resume", signals.signum)
    return TrainResult(str(out), step, total, best_dev, best_step, last_loss, stopped, wall, sps, n, metrics,
                       start_dev=start_dev, pooler=cfg.pooler, pooler_source=pooler_source, export_pooling=cfg.test_pooling)


# =============================================================================== small helpers
class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _nan_message(value: float, step: int, out: Path, best_step: Optional[int]) -> str:
    kept = []
    if ckpt.has_state(out):
        kept.append(f"last saved state in {ckpt.state_dir(out)}")
    if best_step is not None:
        kept.append(f"best model (step {best_step}) in {out}")
    where = "; ".join(kept) if kept else "nothing had been saved yet"
    return f"step {step}: loss is {value}; training stopped ({where}). Try a lower --lr or --max-grad-norm"


def _check_resume_config(cfg: TrainConfig, meta: Dict[str, Any]) -> None:
    saved = meta.get("config", {})
    for key, value in cfg.to_dict().items():
        if key in MUTABLE_ON_RESUME or key not in saved:
            continue
        if saved[key] != value:
            raise ConfigError(f"--{key.replace('_', '-')}: the saved state used {saved[key]!r}, this run {value!r}; cannot resume with a different value")


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def _write_metrics(path: Path, rows: List[Dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _read_metrics(path: Path, up_to_step: int) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and int(r.get("step", 0)) <= up_to_step:
                rows.append(r)
    return rows
