"""``esimcse augment``: lines -> check_augment_args -> Augmenter -> augment_file -> a line, and the ``--show`` table.

The table goes to stdout when the data went to a file, else to stderr: stdout carries data only.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import typer

from esimcse_cli import console as ui
from esimcse_cli.cli.options import MODEL_HELP, EncodingErrors, choice_list
from esimcse_cli.core.augment import DEFAULT_DUP_RATE, INSERT_TOKENS, LEVELS, METHODS
from esimcse_cli.core.segment import SEGMENTERS
from esimcse_cli.core.defaults import DEFAULT_SEED


def augment_cmd(
    input: str = typer.Argument("-", help="Text file, one sentence per line ('-' or omitted: stdin)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write to this file (atomically) instead of stdout."),
    method: str = typer.Option("repetition", "--method", help=f"{choice_list(METHODS)}: ESimCSE's word repetition, or a random baseline."),
    dup_rate: float = typer.Option(DEFAULT_DUP_RATE, "--dup-rate", help="Rate r in [0, 1] of the repeat-count formula (also the insertion/deletion rate)."),
    variant: str = typer.Option(
        "paper", "--variant", help="paper: count ~ U{0..max(2, int(r*N))}, any of the N tokens | official, the released code: subword "
        "randrange(min(10, int(r*L))), L = N+2 counting [CLS]/[SEP] (0 when int(r*L) is 0); word "
        "randrange(min(10, N, max(2, int(r*N)))), never the last word."
    ),
    level: str = typer.Option("subword", "--level", help=f"{choice_list(LEVELS)}: the model tokenizer's pieces (as in the paper), whitespace-separated words, or characters "
                       "(for text without spaces, e.g. Chinese; spaces stay in place; --variant paper only)."),
    segmenter: str = typer.Option("whitespace", "--segmenter", help=f"{choice_list(SEGMENTERS)}: how --level word finds words; "
                                  "jieba (the [zh] extra) segments Chinese."),
    insert_token: str = typer.Option(
        "random", "--insert-token", help=f"For --method insertion: {choice_list(INSERT_TOKENS)} (a vocabulary token, a stopword, or [MASK])."
    ),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="Random seed; the same seed and input give the same output."),
    model: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP + " Only its tokenizer is loaded."),
    show: bool = typer.Option(False, "--show", help="Also print a table of original vs augmented lines, changes highlighted."),
    show_limit: int = typer.Option(20, "--show-limit", help="Rows in the --show table."),
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """ESimCSE word repetition (or random insertion/deletion) of each input line; one output line per input line.

    Example: esimcse augment sample_data/corpus.txt --seed 1 -o augmented.txt
    """
    from esimcse_cli.core.augment_text import Augmenter, augment_file, check_augment_args, needs_tokenizer
    from esimcse_cli.core.models import load_tokenizer

    check_augment_args(input, output, method=method, level=level, variant=variant, insert_token=insert_token,
                       dup_rate=dup_rate, show_limit=show_limit, encoding_errors=encoding_errors, segmenter=segmenter)
    tokenizer = load_tokenizer(model) if needs_tokenizer(method, level, insert_token) else None
    augmenter = Augmenter(tokenizer, method, level, dup_rate, variant, insert_token, seed, segmenter=segmenter)
    result = augment_file(augmenter, input, output, encoding_errors=encoding_errors, show_limit=show_limit if show else 0,
                          progress=_augment_bar if ui.console.is_terminal else None)  # counting the lines is a pass: only for a bar
    if result.output is not None:
        ui.info(f"augment: {result.lines} lines, {result.changed} tokens changed -> {result.output}")
    if show and not result.reader_gone:
        _augment_show(augmenter, result.shown, result.lines, to_file=result.output is not None)


def _augment_bar(total: int):
    """A bar for a long input only: a short one is done before a bar would say anything."""
    return ui.progress_bar(total, "augment", unit="line") if total >= 2000 else contextlib.nullcontext(None)


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
