"""The run log: a training run's metrics, its STS-B dev evaluations, and the model it keeps.

    each optimizer step -> one record: step, epoch, loss, lr, sentences_per_s, elapsed_s, best_dev, best_step
      -> evaluation steps (step 0, every eval_steps, the last step): + dev_spearman, STS-B dev Spearman x100 of
         the online model with the pooling that is exported (exactly what ``eval-sts`` reports); a score
         above the best so far makes the new best, and the model is exported into the output folder
      -> OUT/metrics.jsonl, one line per logged or evaluated step, a projection of its record:
         a log step (every log_steps, the last step): step, epoch, loss, lr, sentences_per_s, elapsed_s, with
           loss and sentences_per_s averaged over the steps since the log line before (only these lines
           start a new window);
         an evaluation step: step, dev_spearman, best_dev, best_step; a step that is both holds both sets
      -> on_step(record + total_steps): rank 0's callback, after every step, with the step's own loss and speed

The starting model is the first candidate: a run whose steps all score lower leaves the starting weights in
the output folder (``best_step`` 0). A dev score that is not finite (NaN from constant vectors) is recorded
as null and is never a candidate. Without dev data nothing is selected, and the model after the last step is
the output. Only rank 0 scores, writes and calls back; at evaluation steps every rank waits for it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from esimcse_cli.core import checkpoint as ckpt
from esimcse_cli.core import distributed as distrib
from esimcse_cli.core.atomic import atomic_write_text
from esimcse_cli.core.config import TrainConfig

if TYPE_CHECKING:  # the trainer imports this module
    from esimcse_cli.core.trainer import Run

METRICS = "metrics.jsonl"
# the keys of a metrics.jsonl line, by why the step is written (the file's shape since before the run log)
LOG_KEYS = ("step", "epoch", "loss", "lr", "sentences_per_s", "elapsed_s")
EVAL_KEYS = ("step", "dev_spearman", "best_dev", "best_step")


def make_dev_scorer(cfg: TrainConfig) -> Optional[Callable[[Any], float]]:
    """STS-B dev Spearman x100 through the evaluation core (exactly what ``eval-sts`` reports); None without dev data."""
    if not cfg.dev_data:
        return None
    from esimcse_cli.core.evaluate import PairScorer
    from esimcse_cli.core.sts import load_task

    scorer = PairScorer(load_task(cfg.dev_data, "STSBenchmark", split="dev"))

    def score(encoder) -> float:
        return float(scorer(encoder, batch_size=cfg.eval_batch_size))

    return score


def write_metrics(out: Path, rows: List[Dict[str, Any]]) -> None:
    atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(out: Path, up_to_step: int) -> List[Dict[str, Any]]:
    """The lines of an earlier run's metrics.jsonl up to ``up_to_step`` (a resumed run continues them)."""
    rows: List[Dict[str, Any]] = []
    path = out / METRICS
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and int(r.get("step", 0)) <= up_to_step:
                rows.append(r)
    return rows


class RunLog:
    """Records each step of ``run``, evaluates and selects on STS-B dev, exports the kept model."""

    def __init__(self, run: "Run", on_step: Optional[Callable[[Dict[str, Any]], None]] = None):
        self.run = run
        self.on_step = on_step
        # rank 0 scores; the other ranks only need to know that it does, to wait for it
        self.selects = run.score_dev is not None if run.is_main else bool(run.cfg.dev_data)
        self.sentences_per_step = run.cfg.batch_size * run.cfg.grad_accum
        self._sentences = 0
        self._clock = self._window_start = time.time()
        self._window_loss, self._window_steps = 0.0, 0
        self._step_ended = self._clock

    def start(self) -> None:
        """Step 0 of a new run: score the starting model, the first candidate. Then the clocks start."""
        if self.run.step == 0 and self.selects:
            self.emit(self.evaluate({"step": 0}))
        self._clock = self._window_start = time.time()

    def record_step(self, loss: float, started: float, ended: float) -> Dict[str, Any]:
        """The record of the optimizer step that ran from ``started`` to ``ended`` (``time.time()``)."""
        run, cfg = self.run, self.run.cfg
        self._sentences += self.sentences_per_step
        self._window_loss += loss
        self._window_steps += 1
        self._step_ended = ended
        seconds = ended - started
        return {"step": run.step, "epoch": run.step * cfg.grad_accum / run.order.per_epoch, "loss": loss,
                "lr": run.opt.param_groups[0]["lr"], "sentences_per_s": self.sentences_per_step / seconds if seconds > 0 else None,
                "elapsed_s": ended - run.started, "best_dev": run.best_dev, "best_step": run.best_step}

    def evaluation_due(self) -> bool:
        step, cfg = self.run.step, self.run.cfg
        return self.selects and ((bool(cfg.eval_steps) and step % cfg.eval_steps == 0) or step == self.run.total)

    def evaluate(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """Score STS-B dev on rank 0 into ``record``; a better score than the best so far is exported. All ranks wait."""
        run = self.run
        if run.is_main:
            dev = run.score_dev(run.eval_encoder)
            dev = dev if dev is not None and math.isfinite(dev) else None  # NaN (constant vectors): no candidate
            if run.step == 0:
                run.start_dev = dev
            if dev is not None and (run.best_dev is None or dev > run.best_dev):
                run.best_dev, run.best_step = dev, run.step
                self.export(dev)
            record.update(dev_spearman=dev, best_dev=run.best_dev, best_step=run.best_step)
        distrib.barrier(run.dist)
        return record

    def emit(self, record: Dict[str, Any]) -> None:
        """Rank 0: append ``record`` to metrics.jsonl at a log or evaluation step, then give it to ``on_step``."""
        run = self.run
        if not run.is_main:
            return
        logged, evaluated = self._log_due(record["step"]), "dev_spearman" in record
        if logged or evaluated:
            run.rows.append(self._line(record, logged, evaluated))
            write_metrics(run.out, run.rows)
        if self.on_step:
            self.on_step(dict(record, total_steps=run.total))

    def _log_due(self, step: int) -> bool:
        every = self.run.cfg.log_steps
        return step > 0 and bool(every) and (step % every == 0 or step == self.run.total)

    def _line(self, record: Dict[str, Any], logged: bool, evaluated: bool) -> Dict[str, Any]:
        """``record`` as a metrics.jsonl line; at a log step, loss and speed over the window since the log line before."""
        keys = (LOG_KEYS if logged else ()) + (EVAL_KEYS if evaluated else ())
        line = {k: record[k] for k in dict.fromkeys(keys) if k in record}
        if logged:
            seconds = max(self._step_ended - self._window_start, 1e-9)
            line.update(loss=self._window_loss / self._window_steps,
                        sentences_per_s=self._window_steps * self.sentences_per_step / seconds)
            self._window_loss, self._window_steps, self._window_start = 0.0, 0, self._step_ended
        return line

    def export(self, dev: Optional[float]) -> None:
        """Write the online encoder (no MLP, no momentum encoder) as the output folder's model, at this step."""
        run, cfg = self.run, self.run.cfg
        extra = {"base_model": run.base.name, "method": cfg.method, "step": run.step, "dev_spearman": dev,
                 "train_pooler": cfg.pooler, "mlp_in_training": bool(cfg.mlp)}
        ckpt.export_model(run.out, run.online.backbone, run.base.tokenizer, run.online.pooling, run.base.max_length, extra)

    def keep_last(self) -> None:
        """At the end of a finished run (rank 0): without a selected model, the model after the last step is the output."""
        run = self.run
        if run.score_dev is None:  # no selection in this run (also a --resume with --dev-data none)
            run.best_dev, run.best_step = None, None
        if run.best_step is None:  # ... or none made: resumed at the end, or no finite score
            self.export(None)

    def sentences_per_s(self) -> float:
        """Training speed of this process since :meth:`start` (evaluations included)."""
        return self._sentences / max(time.time() - self._clock, 1e-9)
