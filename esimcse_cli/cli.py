"""The ``esimcse`` command line: argument parsing and rendering only.

Every command is a thin layer over :mod:`esimcse_cli.core`. Errors the user can fix
(:class:`~esimcse_cli.core.errors.EsimcseError`) are printed as one line on stderr with exit
code 2; ``--debug`` (or ``ESIMCSE_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from esimcse_cli import __version__
from esimcse_cli import console as ui
from esimcse_cli.core.errors import EsimcseError

app = typer.Typer(
    name="esimcse",
    help="ESimCSE sentence embeddings: augment, train, encode, eval-sts, length-analysis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_state = {"debug": os.environ.get("ESIMCSE_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        print(f"esimcse {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks (also: ESIMCSE_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    if debug:
        _state["debug"] = True
    ui.setup_logging(_state["debug"])


# Shared option definitions ------------------------------------------------------------------
MODEL_HELP = "'default' (bundled all-MiniLM-L6-v2), a local model folder, or a hub name."
POOLING_HELP = "cls | cls_before_pooler | avg | avg_first_last | avg_top2 (default: what the folder records)."
DEVICE_HELP = "auto (CUDA when present), cpu, cuda, cuda:N."


# ---- encode ----------------------------------------------------------------------------------
@app.command()
def encode(
    input: str = typer.Argument("-", help="Text file (one text per line), .csv/.tsv/.jsonl/.parquet, or - for stdin."),
    output: str = typer.Option(..., "-o", "--output", help="Output .npy path, or - for stdout."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    pooling: Optional[str] = typer.Option(None, "--pooling", help=POOLING_HELP),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Max tokens per text (default: the model's own limit)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Texts per forward pass."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", "--dtype", help="Output array dtype: float32 or float16."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="L2-normalise each row."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Column to read from csv/tsv/jsonl/parquet."),
    encoding_errors: str = typer.Option("strict", "--encoding-errors", help="strict | replace | ignore, for text that is not UTF-8."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code from the model folder/hub."),
) -> None:
    """Encode texts to a float32 .npy of shape (N, dim), rows in input order."""
    from esimcse_cli.core.embed import encode_file
    from esimcse_cli.core.models import load_encoder

    enc = load_encoder(model, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code)
    with ui.progress_bar(None, "encoding", unit="sent") as advance:
        def start(total: int):
            advance(0, total=total)
            return advance

        stats = encode_file(
            enc, input, output, text_column=text_column, batch_size=batch_size, normalize=normalize,
            dtype=dtype, encoding_errors=encoding_errors, progress_start=start,
        )
    if output != "-":
        ui.info(f"wrote {stats.output}: {stats.rows} x {stats.dim} {dtype} ({enc.pooling} pooling, max length {enc.max_length})")


# ---- augment ---------------------------------------------------------------------------------
@app.command("augment")
def augment_cmd(
    input: str = typer.Argument("-", help="Text file, one sentence per line ('-' or omitted: stdin)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write to this file (atomically) instead of stdout."),
    method: str = typer.Option("repetition", "--method", help="repetition (ESimCSE) | insertion | deletion (the random baselines)."),
    dup_rate: float = typer.Option(0.32, "--dup-rate", help="Rate r in [0, 1] of the repeat-count formula (also the insertion/deletion rate)."),
    variant: str = typer.Option(
        "paper", "--variant", help="paper: count ~ U{0..max(2, int(r*N))} | official: randrange(min(10, int(r*N))) as in the released code."
    ),
    level: str = typer.Option("subword", "--level", help="subword: the model tokenizer's pieces, as in the paper | word: whitespace-separated words."),
    insert_token: str = typer.Option(
        "random", "--insert-token", help="For --method insertion: random (vocabulary token) | stopword | mask ([MASK])."
    ),
    seed: int = typer.Option(42, "--seed", help="Random seed; the same seed and input give the same output."),
    model: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP + " Only its tokenizer is loaded."),
    show: bool = typer.Option(False, "--show", help="Also print a table of original vs augmented lines, changes highlighted."),
    show_limit: int = typer.Option(20, "--show-limit", help="Rows in the --show table."),
) -> None:
    """ESimCSE word repetition (or random insertion/deletion) of each input line; one output line per input line.

    Example: esimcse augment sample_data/corpus.txt --seed 1 -o augmented.txt
    """
    from esimcse_cli.core import augment as aug
    from esimcse_cli.core.atomic import atomic_path, check_output_path

    aug.check_options(method, level, variant, insert_token, dup_rate)
    aug.check_input_path(input)
    to_file = output is not None and output != "-"
    if to_file:
        check_output_path(output)
    tokenizer = aug.load_tokenizer(model) if aug.needs_tokenizer(method, level, insert_token) else None
    augmenter = aug.Augmenter(tokenizer, method, level, dup_rate, variant, insert_token, seed)

    shown: list = []
    counts = {"lines": 0, "changed": 0}

    def run(write) -> None:
        total = aug.count_lines(input) if ui.console.is_terminal else None
        use_bar = total is not None and total >= 2000
        if use_bar:
            bar_cm = ui.progress_bar(total, "augment", unit="line")
            advance = bar_cm.__enter__()
        try:
            records = augmenter.records(aug.read_lines(input), progress=advance if use_bar else None)
            chunk: list = []
            for rec in records:
                counts["lines"] += 1
                counts["changed"] += rec.n_changed
                if show and len(shown) < show_limit:
                    shown.append(rec)
                chunk.append(rec.augmented)
                if len(chunk) >= 512:
                    write("\n".join(chunk) + "\n")
                    chunk = []
            if chunk:
                write("\n".join(chunk) + "\n")
        finally:
            if use_bar:
                bar_cm.__exit__(None, None, None)

    if to_file:
        with atomic_path(output) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                run(fh.write)
        ui.info(f"augment: {counts['lines']} lines, {counts['changed']} tokens changed -> {output}")
    else:
        stream = sys.stdout
        buf = getattr(stream, "buffer", None)
        if buf is not None:
            stream.flush()
            run(lambda text: buf.write(text.encode("utf-8")))
            buf.flush()
        else:
            run(stream.write)
            stream.flush()

    if show:
        _augment_show(augmenter, shown, counts["lines"], to_file)


def _augment_show(augmenter, records: list, n_lines: int, to_file: bool) -> None:
    """Render the --show table: stdout when the data went to a file, else stderr (stdout stays data only)."""
    from rich.text import Text

    added_style, removed_style = "bold magenta", "strike red"
    what = {"repetition": "repeated", "insertion": "inserted", "deletion": "deleted"}[augmenter.method]
    table = ui.new_table(
        f"augment --method {augmenter.method} --level {augmenter.level} --variant {augmenter.variant} "
        f"--dup-rate {augmenter.dup_rate:g} ({what} tokens highlighted)",
        "#",
        "original",
        "augmented",
        "Δ",
    )
    for i, rec in enumerate(records, 1):
        if not rec.tokens:
            table.add_row(str(i), "", "", "0")
            continue
        orig = Text.assemble(*[(t, removed_style if m else "") for t, m in augmenter.display_segments(rec.tokens, rec.removed)])
        new = Text.assemble(*[(t, added_style if m else "") for t, m in augmenter.display_segments(rec.new_tokens, rec.added)])
        table.add_row(str(i), orig, new, f"{len(rec.new_tokens) - len(rec.tokens):+d}")
    target = ui.out if to_file else ui.console
    target.print(table)
    if n_lines > len(records):
        target.print(f"({len(records)} of {n_lines} lines shown; --show-limit to see more)")


# ---- eval-sts / length-analysis ----------------------------------------------------------------

# ---- train -----------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one-line messages."""
    try:
        app()
    except EsimcseError as exc:
        if _state["debug"]:
            raise
        ui.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        ui.error("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        sys.exit(0)
    except Exception as exc:  # a bug: still one line unless --debug
        if _state["debug"]:
            raise
        ui.error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (rerun with --debug for the traceback)")
        sys.exit(1)
