"""``esimcse train``: the options -> run_folder.run_config -> trainer.train (a bar: loss, dev, best, speed) -> rank 0's summary.

Each parameter is named after its :class:`~esimcse_cli.core.config.TrainConfig` field, so the options the
user gave are the parsed parameters themselves; ``None`` is "not given" (a ``--config`` file or a saved
run decides).
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from esimcse_cli import console as ui
from esimcse_cli.cli.options import Device, EncodingErrors, Model, TextColumn, TrustRemoteCode, choice_list
from esimcse_cli.core import augment
from esimcse_cli.core.config import AUTO_POOLER, METHODS, PRESETS, SCHEDULERS, TrainConfig
from esimcse_cli.core.pooling import POOLINGS
from esimcse_cli.core.segment import SEGMENTERS

# Parameters of the command that are not TrainConfig fields.
NOT_CONFIG = ("config",)
# the defaults the help names are the dataclass's (every option here is None: "not given")
_DEFAULT = TrainConfig()
_BAR_FIELDS = "loss {task.fields[loss]} · dev {task.fields[dev]} · best {task.fields[best]} · {task.fields[sps]} sent/s"


def train_cmd(
    ctx: typer.Context,
    corpus: Optional[str] = typer.Argument(None, help="Training sentences: one per line (- = stdin), or .csv/.tsv/.jsonl/.parquet with --text-column."),
    output_dir: Optional[str] = typer.Option(None, "-o", "--output", help="Output folder (default: esimcse-model)."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file of options; command-line flags override it."),
    preset: Optional[str] = typer.Option(None, "--preset", help=f"The paper's hyperparameters: {choice_list(PRESETS)}."),
    model: Model = None,
    method: Optional[str] = typer.Option(None, "--method", help=f"{choice_list(METHODS)} (default {_DEFAULT.method}): sets the defaults of the two switches below."),
    repetition: Optional[bool] = typer.Option(None, "--repetition/--no-repetition", help="Build positives by word repetition (ESimCSE)."),
    momentum_queue: Optional[bool] = typer.Option(None, "--momentum-queue/--no-momentum-queue", help="Add momentum-encoder queue negatives."),
    dup_rate: Optional[float] = typer.Option(None, "--dup-rate", help=f"Repetition rate (default {_DEFAULT.dup_rate})."),
    repetition_variant: Optional[str] = typer.Option(None, "--repetition-variant", help="paper: count ~ U{0..max(2, int(r*N))} | official: the released code, randrange(min(10, int(r*L))) with "
         "L = N+2 counting [CLS]/[SEP] (0 when int(r*L) is 0)."),
    augmentation: Optional[str] = typer.Option(None, "--augmentation", help=f"Positive builder when --repetition is on: {choice_list(augment.METHODS)} (default {_DEFAULT.augmentation}; the others are the paper's baselines)."),
    insert_token: Optional[str] = typer.Option(None, "--insert-token", help=f"For --augmentation insertion: {choice_list(augment.INSERT_TOKENS)}."),
    repetition_level: Optional[str] = typer.Option(None, "--repetition-level", help=f"What the positive repeats: {choice_list(augment.LEVELS)} (default {_DEFAULT.repetition_level}, the paper's; "
         "word: whole words, e.g. jieba's for Chinese; char: characters). N counts the same unit."),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", help=f"How --repetition-level word finds words: {choice_list(SEGMENTERS)} (default {_DEFAULT.segmenter}; jieba: pip install 'esimcse-cli[zh]')."),
    momentum: Optional[float] = typer.Option(None, "--momentum", help="EMA coefficient m (default 0.995)."),
    momentum_variant: Optional[str] = typer.Option(None, "--momentum-variant", help="paper (a copy of the model with its own MLP, EMA after each step) | official, the released code (online "
         "MLP, EMA in the forward, momentum encoder starting from random weights, --max-grad-norm 1.0 unless given)."),
    queue_ratio: Optional[float] = typer.Option(None, "--queue-ratio", help="Queue size as a multiple of the batch size (default 2.5)."),
    queue_size: Optional[int] = typer.Option(None, "--queue-size", help="Queue size in sentences (overrides --queue-ratio)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Softmax temperature (default 0.05)."),
    pooler: Optional[str] = typer.Option(None, "--pooler", help=f"Training pooler: {AUTO_POOLER} (default: the pooling the model declares, e.g. avg for the bundled model; cls for a raw BERT) | {choice_list(POOLINGS)}; cls is [CLS] + MLP in training, raw [CLS] at test."),
    mlp: Optional[bool] = typer.Option(None, "--mlp/--no-mlp", help="Training-only MLP over the pooled vector (default: on for cls)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Override the model's dropout (default: its config)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Truncate training sentences to this many tokens (default 32)."),
    split_by_length: Optional[bool] = typer.Option(None, "--split-by-length/--no-split-by-length", help="Run each batch as a few length groups, padding less (same rows, same loss; default on)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Sentences per batch, over all processes (default 64)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 3e-5)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay (default 0)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the corpus (default 1; ignored with --max-steps)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Linear warm-up steps (default 0)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=f"{choice_list(SCHEDULERS)} (default {_DEFAULT.scheduler}; linear decays to 0)."),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step (default 1)."),
    max_grad_norm: Optional[float] = typer.Option(None, "--max-grad-norm", help="Clip the gradient norm (default: off; 1.0 with --momentum-variant official, as the released code)."),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Random seed (default {_DEFAULT.seed})."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast (CUDA only)."),
    device: Device = None,
    dev_data: Optional[str] = typer.Option(None, "--dev-data", help="SentEval data folder: select the best model on STS-B dev (default: the first of $ESIMCSE_DATA_DIR, the corpus's folder, ./SentEval/data/downstream, ./data/downstream and the user data and cache folders (see README) that holds STS-B dev; 'none': off)."),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps", help="Score STS-B dev every N steps (default 125)."),
    log_steps: Optional[int] = typer.Option(None, "--log-steps", help="Write a metrics.jsonl line every N steps (default 10)."),
    save_steps: Optional[int] = typer.Option(None, "--save-steps", help="Save resumable state every N steps (default 500; 0 = only on interrupt)."),
    text_column: TextColumn = None,
    dedupe: Optional[bool] = typer.Option(None, "--dedupe/--no-dedupe", help="Drop repeated sentences (first one kept)."),
    encoding_errors: EncodingErrors = None,
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue from the state saved in the output folder."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Replace an existing output folder's run."),
    keep_state: Optional[bool] = typer.Option(None, "--keep-state/--no-keep-state", help="Keep the resumable state after a finished run."),
    trust_remote_code: TrustRemoteCode = None,
) -> None:
    """Train sentence embeddings with ESimCSE (or SimCSE, or any ablation) and write a model folder."""
    from esimcse_cli.core.run_folder import run_config
    from esimcse_cli.core.trainer import TrainInterrupted, train

    cfg = run_config({k: v for k, v in ctx.params.items() if k not in NOT_CONFIG}, config)
    with ui.deferred_progress("training", unit="step", extra=_BAR_FIELDS) as start:
        bar = _TrainBar(start)
        try:
            res = train(cfg, on_start=bar.on_start, on_step=bar.on_step, command=sys.argv)
        except TrainInterrupted as exc:
            if exc.is_main:  # under torchrun every rank stops; rank 0 says so
                ui.warn(str(exc))
            raise typer.Exit(exc.exit_code)
    if res.is_main:
        _summary(cfg, res)


def _f(value, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


class _TrainBar:
    """The trainer's callbacks on the bar: it appears at the first step (after the two lines of what runs)."""

    def __init__(self, start):
        self.start, self.advance = start, None

    def on_start(self, info: dict) -> None:
        c = info["corpus"]
        ui.info(
            f"corpus {c['source']}: {c['sentences']:,} sentences ({c['blank']:,} blank, {c['duplicates']:,} duplicate lines skipped); "
            f"model {info['model']} on {info['device']} x{info['world_size']}; queue {info['queue_size']}; "
            f"{info['total_steps']:,} steps" + (f", resuming at {info['start_step']:,}" if info["start_step"] else "")
        )
        ui.info(f"pooler {info['pooler']}{' + training-only MLP' if info['mlp'] else ''}, exported as {info['export_pooling']} ({info['pooler_source']})")
        self.advance = self.start(info["total_steps"])
        if info["start_step"]:
            self.advance(info["start_step"])

    def on_step(self, row: dict) -> None:
        if self.advance is None:
            return
        fields = {"best": _f(row.get("best_dev"))}
        if row.get("loss") is not None:
            fields["loss"] = _f(row["loss"], "{:.4f}")
        if row.get("sentences_per_s"):
            fields["sps"] = _f(row["sentences_per_s"], "{:,.0f}")
        if "dev_spearman" in row:
            fields["dev"] = _f(row["dev_spearman"])
        self.advance(0 if row["step"] == 0 else 1, **fields)


def _summary(cfg, res) -> None:
    resolved = cfg.resolved()
    table = ui.new_table("esimcse train", "what", "value")
    table.add_row("method", f"{cfg.method} (repetition {'on' if resolved.repetition else 'off'}, momentum queue {'on' if resolved.momentum_queue else 'off'})")
    table.add_row("steps", f"{res.step:,} / {res.total_steps:,}")
    table.add_row("final loss", _f(res.last_loss, "{:.4f}"))
    table.add_row("start STS-B dev", _f(res.start_dev) if res.start_dev is not None else "-")
    table.add_row("best STS-B dev", f"{_f(res.best_dev)} (step {res.best_step})" if res.best_dev is not None else "- (no --dev-data: last model kept)")
    table.add_row("pooling exported", f"{res.export_pooling} (trained with {res.pooler})")
    table.add_row("sentences/s", _f(res.sentences_per_s, "{:,.1f}"))
    table.add_row("wall time", f"{res.wall_s:,.1f} s")
    table.add_row("output", res.output_dir)
    ui.print_table(table)
    if res.kept_start:
        ui.warn(f"no step beat the starting model on STS-B dev ({res.start_dev:.2f}); the output is the starting model")
