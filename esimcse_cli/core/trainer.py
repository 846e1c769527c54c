"""``esimcse train``: set up a run, then the loop on one screen.

    corpus -> spooled index (core/corpus.py) -> seeded order of micro-batches (core/views.py)
      -> view 1: the ids;  view 2: the same ids again (SimCSE) or with word repetition (ESimCSE)
      -> online encoder (+ training MLP) on both views        (dropout makes SimCSE's two views differ)
      -> [momentum encoder on view 1, no grad]                 (official variant: EMA first, then this)
      -> InfoNCE over in-batch positives ++ queue negatives
      -> backward -> (gradient accumulation) -> clip -> optimizer step -> learning-rate schedule
      -> [EMA update of the momentum encoder]                  (paper variant: after each optimizer step)
      -> enqueue the momentum embeddings
      -> the run log (core/run_log.py): metrics; STS-B dev at step 0, every eval_steps and at the end; the best exported
      -> every save_steps, and on a stop: resumable state (core/checkpoint.py)

:func:`setup_run` does everything before the first step and returns a :class:`Run`; :func:`train_step` is one
optimizer step; :func:`train` is the loop. Where the rest lives:

* **Corpus and batches.** :class:`~esimcse_cli.core.corpus.CorpusIndex` spools the corpus to disk once;
  :mod:`esimcse_cli.core.views` orders it per epoch (the last incomplete batch dropped: a fixed batch keeps the
  queue and the in-batch negatives the same size) and builds the two views, seeded per micro-batch. The data
  position is the number of micro-batches consumed.
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
* **The output folder** (:mod:`esimcse_cli.core.run_folder`): one run at a time; refused when not empty unless
  ``--overwrite``; ``--resume`` continues from ``OUT/state``. A signal before the first step writes nothing.
* **Signals** (:mod:`esimcse_cli.core.signals`): the first SIGINT/SIGTERM finishes the step, saves the state and
  raises :class:`TrainInterrupted`; a second one stops at once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import platform
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional

import torch

from esimcse_cli.core import checkpoint as ckpt
from esimcse_cli.core import distributed as distrib
from esimcse_cli.core.atomic import atomic_write_text
from esimcse_cli.core.card import write_card
from esimcse_cli.core.config import AUTO_POOLER, TrainConfig, to_cli_args, write_config
from esimcse_cli.core.contrastive import ContrastiveModel, choose_pooler
from esimcse_cli.core.corpus import CorpusIndex
from esimcse_cli.core.encoder import SentenceEncoder
from esimcse_cli.core.errors import ConfigError, EsimcseError, InputError, first_line
from esimcse_cli.core.loss import contrastive_loss
from esimcse_cli.core.models import Backbone, check_model, load_backbone, position_limit, resolve_device
from esimcse_cli.core.momentum import MomentumEncoder, NegativeQueue
from esimcse_cli.core.padding import forward_by_length, overhead_for
from esimcse_cli.core.run_folder import check_resume_config, clear_previous_run, hold_output, prepare_output
from esimcse_cli.core.run_log import RunLog, make_dev_scorer, read_metrics, write_metrics
from esimcse_cli.core.signals import DeferredStop
from esimcse_cli.core.views import SECOND_VIEW_STREAM, Batcher, EpochOrder, seed_for

log = logging.getLogger("esimcse")


class TrainInterrupted(EsimcseError):
    """SIGINT/SIGTERM arrived: the message names it and says what was kept; exit code 130 (SIGINT) or 143 (SIGTERM).

    Every rank raises it; ``is_main`` (rank 0) tells the one that says so.
    """

    def __init__(self, signum: int, what: str, is_main: bool = True):
        super().__init__(f"{signal.Signals(signum).name} {what}")
        self.signum = signum
        self.exit_code = 128 + int(signum)
        self.is_main = is_main


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
    is_main: bool = True  # rank 0, the process that reports the run (every rank returns a result)

    @property
    def kept_start(self) -> bool:
        """No step beat the starting model on STS-B dev: the output folder holds the starting weights."""
        return self.best_step == 0


@dataclass
class Run:
    """One training run: what :func:`setup_run` builds, and the state :func:`train_step` and the run log advance."""

    cfg: TrainConfig  # resolved, with ``--pooler auto`` settled
    dist: distrib.DistInfo
    stop: DeferredStop
    device: str
    out: Path
    corpus: CorpusIndex
    order: EpochOrder
    batcher: Batcher
    base: Backbone  # the base model as loaded: tokenizer, name, path, export max length
    online: ContrastiveModel
    momentum: Optional[MomentumEncoder]
    queue: Optional[NegativeQueue]
    opt: torch.optim.Optimizer
    total: int  # optimizer steps of the whole run (a resumed one included)
    score_dev: Optional[Callable[[SentenceEncoder], float]]  # rank 0 with dev data only
    eval_encoder: SentenceEncoder  # the online backbone with the exported pooling
    pooler_source: str
    started: float  # time.time() when train() was called
    manifest: Dict[str, Any] = field(default_factory=dict)
    # what the run advances (step and selection are saved with the state, and restored on --resume)
    step: int = 0
    best_dev: Optional[float] = None
    best_step: Optional[int] = None
    start_dev: Optional[float] = None
    rows: List[Dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, line by line
    last_loss: Optional[float] = None
    stopped: Optional[str] = None  # None (running or finished), "signal", "callback"

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def per_rank(self) -> int:
        return self.cfg.batch_size // self.dist.world_size

    @functools.cached_property
    def params(self) -> List[torch.nn.Parameter]:
        return [p for p in self.online.parameters() if p.requires_grad]

    @functools.cached_property
    def autocast(self) -> ContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cfg.bf16 else nullcontext()

    @functools.cached_property
    def overhead(self) -> Optional[int]:
        """The length groups' price of one more forward (None: one padded forward per view pair)."""
        return overhead_for(self.device) if self.cfg.split_by_length else None

    def save_due(self) -> bool:
        return bool(self.cfg.save_steps) and self.step % self.cfg.save_steps == 0 and self.step < self.total

    def info(self) -> Dict[str, Any]:
        """What ``on_start`` gets."""
        cfg = self.cfg
        return {"total_steps": self.total, "start_step": self.step, "corpus": self.corpus.stats,
                "queue_size": self.queue.size if self.queue is not None else 0, "device": self.device,
                "world_size": self.dist.world_size, "output_dir": str(self.out), "model": self.base.name, "pooler": cfg.pooler,
                "mlp": bool(cfg.mlp), "pooler_source": self.pooler_source, "export_pooling": cfg.test_pooling}


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
    ``on_step(record)`` gets, after every optimizer step (and after step 0's evaluation), the run log's record
    (:mod:`esimcse_cli.core.run_log`): ``step``, ``total_steps``, ``loss``, ``lr``, ``sentences_per_s``,
    ``best_dev``, ...; plus ``dev_spearman`` at evaluation steps.
    ``should_stop(step)`` returning True saves the state and returns (``result.stopped == "callback"``).
    SIGINT/SIGTERM save the state and raise :class:`TrainInterrupted`; a NaN/inf loss raises
    :class:`NonFiniteLoss`. Only callbacks of rank 0 are called.
    """
    cfg = cfg.resolved().validate()
    started = time.time()
    dist = distrib.init(_wants_cuda(cfg))
    lock = None
    try:
        lock = hold_output(cfg, dist)  # one run per output folder, held to the end however the run ends
        with DeferredStop() as stop, tempfile.TemporaryDirectory(prefix="esimcse-train-") as work:
            run = setup_run(cfg, dist, Path(work), stop, command=command, started=started)
            runlog = RunLog(run, on_step)
            if run.is_main and on_start:
                on_start(run.info())
            runlog.start()  # step 0: the starting model is the first candidate
            _stop_before_first_step(run, "nothing trained, nothing saved")
            while run.step < run.total:
                step_started = time.time()
                loss = train_step(run)
                record = runlog.record_step(loss, step_started, time.time())
                if runlog.evaluation_due():
                    runlog.evaluate(record)
                runlog.emit(record)
                stopping = _stop_agreed(run, should_stop)
                if stopping or run.save_due():
                    save_state(run)
                if stopping:
                    run.stopped = "signal" if stop.requested else "callback"
                    break
            return _finish(run, runlog)
    finally:
        if lock is not None:
            lock.release()  # and the folder, if it was made only for the lock and nothing was written
        distrib.shutdown(dist)


def train_step(run: Run) -> float:
    """One optimizer step: ``grad_accum`` micro-batches, clip, step, EMA; returns the step's loss."""
    cfg = run.cfg
    for g in run.opt.param_groups:
        g["lr"] = cfg.lr * lr_factor(run.step, run.total, cfg.warmup, cfg.scheduler)
    loss = 0.0
    for micro in range(run.step * cfg.grad_accum, (run.step + 1) * cfg.grad_accum):
        loss += _micro_batch(run, micro) / cfg.grad_accum
    distrib.all_reduce_grads(run.params, run.dist)
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(run.params, cfg.max_grad_norm)
    run.opt.step()
    # zero in place rather than free: gradients re-allocated every step (the size of the model) are fresh
    # pages on CPU, one page fault per 4 KiB (docs/RESULTS.md, "Figures behind code comments")
    run.opt.zero_grad(set_to_none=False)
    if run.momentum is not None and cfg.momentum_variant == "paper":
        run.momentum.update(run.online)  # paper: EMA after each optimizer step
    run.step += 1
    run.last_loss = loss
    return loss


def _micro_batch(run: Run, micro: int) -> float:
    """Forward and backward of one micro-batch (this rank's slice of it); the momentum keys are enqueued."""
    cfg, dist = run.cfg, run.dist
    texts = run.corpus.get(run.order.batch(micro))
    torch.manual_seed(seed_for(cfg.seed, micro, dist.rank))  # dropout: the same masks in a resumed run

    # two views of the global batch; this rank encodes its slice
    ids = run.batcher.tokenize(texts)
    ids2 = run.batcher.second_view(ids, seed_for(cfg.seed, micro, SECOND_VIEW_STREAM), texts) if cfg.repetition else ids
    mine = slice(dist.rank * run.per_rank, (dist.rank + 1) * run.per_rank)
    ids, ids2 = ids[mine], ids2[mine]

    if run.momentum is not None and cfg.momentum_variant == "official":
        run.momentum.update(run.online)  # official: EMA inside the forward, before this step's update
    with run.autocast:
        # one forward over both views, [batch; batch] (SimCSE: dropout makes them differ) or
        # [batch; repeated copies] (ESimCSE), run as a few length groups to pad less
        z = forward_by_length(run.online, ids + ids2, run.batcher.pad_id, run.device, run.overhead)
        z1, z2 = z[: run.per_rank], z[run.per_rank :]
        keys = None
        if run.momentum is not None:
            momentum = functools.partial(run.momentum, online=run.online)
            keys = forward_by_length(momentum, ids, run.batcher.pad_id, run.device, run.overhead)
    z1, z2 = distrib.gather_with_grad(z1, dist), distrib.gather_with_grad(z2, dist)
    loss = contrastive_loss(z1, z2, run.queue.tensor() if run.queue is not None else None, cfg.temperature)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLoss(_nan_message(value, run.step + 1, run.out, run.best_step))
    (loss / cfg.grad_accum).backward()
    if run.queue is not None:
        run.queue.enqueue(distrib.gather(keys, dist))
    return value


def _stop_agreed(run: Run, should_stop: Optional[Callable[[int], bool]]) -> bool:
    """A signal (any rank) or ``should_stop`` (rank 0) asks to stop after this step; never after the last one."""
    if run.step >= run.total:
        return False
    asked = run.stop.requested or bool(should_stop and run.is_main and should_stop(run.step))
    return distrib.any_rank(asked, run.dist)


def _stop_before_first_step(run: Run, what: str) -> None:
    """A signal on any rank during the set-up: stop before the first step (``what``: what is left behind)."""
    if distrib.any_rank(run.stop.requested, run.dist):
        raise TrainInterrupted(run.stop.signum or signal.SIGINT, f"before the first step: {what}", run.is_main)


def _finish(run: Run, runlog: RunLog) -> TrainResult:
    """The end, finished or stopped: the model of an unselected run, the state dropped, manifest and card."""
    cfg, out = run.cfg, run.out
    wall = time.time() - run.started
    sps = runlog.sentences_per_s()
    if run.stopped is None and run.is_main:
        runlog.keep_last()
        if not cfg.keep_state:
            ckpt.remove_state(out)
    if run.is_main:
        run.manifest.update({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": run.step, "total_steps": run.total,
                             "start_dev": run.start_dev, "best_dev": run.best_dev, "best_step": run.best_step,
                             "kept_starting_model": run.best_step == 0, "wall_s": wall, "sentences_per_s": sps, "stopped": run.stopped})
        _write_json(out / "manifest.json", run.manifest)
        write_card(out)  # README.md (+ dev_curve.png): the model card, from the files above; never fails the run
    run.corpus.close()
    distrib.barrier(run.dist)
    if run.stopped == "signal":
        raise TrainInterrupted(run.stop.signum, f"at step {run.step}/{run.total}: state saved in {ckpt.state_dir(out)}; continue with --resume",
                               run.is_main)
    return TrainResult(str(out), run.step, run.total, run.best_dev, run.best_step, run.last_loss, run.stopped, wall, sps, len(run.corpus),
                       run.rows, start_dev=run.start_dev, pooler=cfg.pooler, pooler_source=run.pooler_source, export_pooling=cfg.test_pooling,
                       is_main=run.is_main)


# =============================================================================== set-up
def setup_run(cfg: TrainConfig, dist: distrib.DistInfo, work: Path, stop: DeferredStop, *,
              command: Optional[List[str]] = None, started: Optional[float] = None) -> Run:
    """Everything before the first step, cheapest checks first; ``work`` holds the corpus spool.

    Options, output folder and saved state, dev data and model folder are checked before the corpus is read
    and the weights are loaded. A signal meanwhile raises :class:`TrainInterrupted` before anything is
    written; otherwise rank 0 writes ``train_config.yaml``, ``manifest.json`` and ``metrics.jsonl``.
    """
    device = _check_run_options(cfg, dist)
    out = prepare_output(cfg)
    saved_tensors, saved_meta = ckpt.load_state(out) if cfg.resume else ({}, {})
    if cfg.resume:
        check_resume_config(saved_meta.get("config", {}), cfg.to_dict())
    score_dev = make_dev_scorer(cfg) if dist.is_main else None  # bad dev data fails here, before the slow parts
    check_model(cfg.model)  # a broken model folder fails here, before the corpus is spooled (cheap: no weights read)
    limit = position_limit(cfg.model, cfg.trust_remote_code)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(f"--max-length {cfg.max_length}: the model takes at most {limit} tokens (its position embeddings)")
    cfg, pooler_source = settle_pooler(cfg)

    corpus = _spool_corpus(cfg, work, stop, dist)
    if cfg.resume and saved_meta.get("corpus_sha256") != corpus.stats["sha256"]:
        raise InputError(f"{corpus.stats['source']}: not the corpus the saved state was trained on (sha256 differs)")
    total = _total_steps(cfg, corpus)

    base = load_backbone(cfg.model, device=device, trust_remote_code=cfg.trust_remote_code, dropout=cfg.dropout)
    online = ContrastiveModel(base.model, cfg.pooler, bool(cfg.mlp), seed=cfg.seed).to(device)
    online.train()
    run = Run(
        cfg=cfg, dist=dist, stop=stop, device=device, out=out, corpus=corpus, order=EpochOrder(len(corpus), cfg.batch_size, cfg.seed),
        batcher=Batcher(base.tokenizer, cfg, limit), base=base, online=online,
        momentum=MomentumEncoder(online, cfg.momentum, cfg.momentum_variant, seed=cfg.seed) if cfg.momentum_queue else None,
        queue=NegativeQueue(cfg.effective_queue_size(), int(base.model.config.hidden_size), device=device) if cfg.momentum_queue else None,
        opt=make_optimizer(online, cfg), total=total, score_dev=score_dev,
        eval_encoder=SentenceEncoder(base.tokenizer, online.backbone, online.pooling, base.max_length, device=device, name=base.name),
        pooler_source=pooler_source, started=started if started is not None else time.time(),
    )
    if cfg.resume:
        _restore(run, saved_tensors, saved_meta)
    del saved_tensors
    _stop_before_first_step(run, "nothing trained, nothing written")  # the output folder stays as it was
    if run.is_main and not cfg.dev_data:
        log.warning("no STS-B dev data, so no model selection: the model after the last step is written "
                    "(give --dev-data with SentEval's data folder, or set ESIMCSE_DATA_DIR)")
    run.manifest = _manifest(run, command)
    _write_start_files(run)
    return run


def _wants_cuda(cfg: TrainConfig) -> bool:
    if cfg.device == "auto":
        return torch.cuda.is_available()
    return cfg.device.startswith("cuda")


def _check_run_options(cfg: TrainConfig, dist: distrib.DistInfo) -> str:
    """The checks that need nothing read; returns this rank's device."""
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
    return device


def _spool_corpus(cfg: TrainConfig, work: Path, stop: DeferredStop, dist: distrib.DistInfo) -> CorpusIndex:
    # a single process stops reading a long corpus on the first signal (several processes must meet at the
    # collective check after the set-up, so they read to the end)
    poll = None if dist.enabled else (lambda: stop.requested)
    try:
        return CorpusIndex.build(cfg.corpus, work, cfg.text_column, cfg.encoding_errors, cfg.dedupe, stop=poll)
    except KeyboardInterrupt:
        if stop.signum is None:
            raise
        raise TrainInterrupted(stop.signum, "while reading the corpus: nothing trained, nothing saved", dist.is_main) from None


def _total_steps(cfg: TrainConfig, corpus: CorpusIndex) -> int:
    """Optimizer steps of the run: ``max_steps``, or ``epochs`` over the corpus in full batches."""
    n, source = len(corpus), corpus.stats["source"]
    if n == 0:
        raise InputError(f"{source}: no sentences to train on (the corpus is empty or has only blank lines)")
    if n < cfg.batch_size:
        raise InputError(f"{source}: {n} usable sentences, fewer than one batch of {cfg.batch_size}")
    total = cfg.max_steps if cfg.max_steps else (cfg.epochs * (n // cfg.batch_size)) // cfg.grad_accum
    if total < 1:
        raise InputError(f"{source}: {n} sentences give no full optimizer step (batch {cfg.batch_size} x grad-accum {cfg.grad_accum})")
    return total


def _restore(run: Run, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> None:
    """--resume: the models, queue, optimizer and RNG states, step, selection and metrics of the saved state."""
    try:
        ckpt.load_module_tensors("online", run.online, tensors)
        if run.momentum is not None:
            ckpt.load_module_tensors("momentum", run.momentum, tensors)
            run.queue.load_state_tensor(tensors["queue"])
        ckpt.load_optimizer_tensors(run.opt, tensors)
        ckpt.set_rng_state(tensors, meta.get("rng", {}))
    except (EsimcseError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # a state edited or of another model
        raise InputError(f"{ckpt.state_dir(run.out)}: saved state does not match this model and config ({type(exc).__name__}: {first_line(exc)})") from None
    run.step = int(meta["step"])
    run.best_dev, run.best_step, run.start_dev = meta.get("best_dev"), meta.get("best_step"), meta.get("start_dev")
    run.rows = read_metrics(run.out, run.step)
    if run.step >= run.total:
        log.warning("the saved state is at step %d, which is not below the %d steps asked for; nothing to train", run.step, run.total)


def _manifest(run: Run, command: Optional[List[str]]) -> Dict[str, Any]:
    """``manifest.json`` as written before the first step (the end adds steps, scores and times)."""
    cfg = run.cfg
    return {
        "command": command if command is not None else sys.argv,
        "equivalent_command": ["esimcse", "train"] + to_cli_args(cfg),
        "seed": cfg.seed,
        "corpus": run.corpus.stats,
        "model": run.base.name,
        "model_path": run.base.path,
        "device": run.device,
        "world_size": run.dist.world_size,
        "versions": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed_from_step": run.step if cfg.resume else None,
        "pooler": {"train": cfg.pooler, "mlp": bool(cfg.mlp), "exported": cfg.test_pooling, "why": run.pooler_source},
    }


def _write_start_files(run: Run) -> None:
    """Rank 0 writes the run's files before the first step (an --overwrite clears the earlier run's); all ranks wait."""
    cfg, out = run.cfg, run.out
    if run.is_main:
        out.mkdir(exist_ok=True)
        if cfg.overwrite and not cfg.resume:
            clear_previous_run(out)
        write_config(cfg, out / "train_config.yaml")
        _write_json(out / "manifest.json", run.manifest)
        write_metrics(out, run.rows)
    distrib.barrier(run.dist)


def save_state(run: Run) -> None:
    """Rank 0 writes ``OUT/state``, everything a --resume needs (:mod:`esimcse_cli.core.checkpoint`); all ranks wait."""
    if run.is_main:
        cfg = run.cfg
        tensors = ckpt.module_tensors("online", run.online)
        if run.momentum is not None:
            tensors.update(ckpt.module_tensors("momentum", run.momentum))
            tensors["queue"] = run.queue.state_tensor()
        tensors.update(ckpt.optimizer_tensors(run.opt))
        rng_tensors, rng_meta = ckpt.rng_state()
        tensors.update(rng_tensors)
        meta = {"step": run.step, "micro_batches": run.step * cfg.grad_accum, "best_dev": run.best_dev, "best_step": run.best_step,
                "start_dev": run.start_dev, "config": cfg.to_dict(), "rng": rng_meta, "corpus_sha256": run.corpus.stats["sha256"],
                "world_size": run.dist.world_size}
        ckpt.save_state(run.out, tensors, meta)
    distrib.barrier(run.dist)


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


def settle_pooler(cfg: TrainConfig) -> tuple:
    """``(cfg, why)`` with ``--pooler auto`` replaced by :func:`~esimcse_cli.core.contrastive.choose_pooler`'s choice.

    An explicit ``--pooler`` is kept as it is. The choice is written into the run's config, so
    ``train_config.yaml``, the saved state and ``--resume`` all see the pooler that was trained.
    """
    if cfg.resume:
        return cfg, "as the run being resumed chose it"
    if cfg.pooler != AUTO_POOLER:
        return cfg, "given with --pooler (or in --config)"
    pooler, why = choose_pooler(cfg.model, cfg.preset)
    return dataclasses.replace(cfg, pooler=pooler).resolved(), why


def _nan_message(value: float, step: int, out: Path, best_step: Optional[int]) -> str:
    kept = []
    if ckpt.has_state(out):
        kept.append(f"last saved state in {ckpt.state_dir(out)}")
    if best_step is not None:
        kept.append(f"best model (step {best_step}) in {out}")
    where = "; ".join(kept) if kept else "nothing had been saved yet"
    return f"step {step}: loss is {value}; training stopped ({where}). Try a lower --lr or --max-grad-norm"


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
