"""The ``esimcse`` command line: argument parsing and rendering only.

Every command is a thin layer over :mod:`esimcse_cli.core`. Errors the user can fix
(:class:`~esimcse_cli.core.errors.EsimcseError`) are printed as one line on stderr with exit
code 2; ``--debug`` (or ``ESIMCSE_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import contextlib
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
    help="ESimCSE sentence embeddings: augment, train, encode, eval-sts, compare, length-analysis.",
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
    from esimcse_cli.core.embed import check_encode_args, encode_file
    from esimcse_cli.core.models import load_encoder

    check_encode_args(input, output, dtype=dtype, batch_size=batch_size, encoding_errors=encoding_errors, text_column=text_column)
    enc = load_encoder(model, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code)
    with ui.deferred_progress("encoding", unit="sent") as start:
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
        "paper", "--variant", help="paper: count ~ U{0..max(2, int(r*N))}, any of the N tokens | official, the released code: subword "
        "randrange(min(10, int(r*L))), L = N+2 counting [CLS]/[SEP] (0 when int(r*L) is 0); word "
        "randrange(min(10, N, max(2, int(r*N)))), never the last word."
    ),
    level: str = typer.Option("subword", "--level", help="subword: the model tokenizer's pieces, as in the paper | word: whitespace-separated words."),
    insert_token: str = typer.Option(
        "random", "--insert-token", help="For --method insertion: random (vocabulary token) | stopword | mask ([MASK])."
    ),
    seed: int = typer.Option(42, "--seed", help="Random seed; the same seed and input give the same output."),
    model: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP + " Only its tokenizer is loaded."),
    show: bool = typer.Option(False, "--show", help="Also print a table of original vs augmented lines, changes highlighted."),
    show_limit: int = typer.Option(20, "--show-limit", help="Rows in the --show table."),
    encoding_errors: str = typer.Option("strict", "--encoding-errors", help="strict | replace | ignore, for text that is not UTF-8."),
) -> None:
    """ESimCSE word repetition (or random insertion/deletion) of each input line; one output line per input line.

    Example: esimcse augment sample_data/corpus.txt --seed 1 -o augmented.txt
    """
    from esimcse_cli.core.augment_text import Augmenter, augment_file, check_augment_args, needs_tokenizer
    from esimcse_cli.core.models import load_tokenizer

    check_augment_args(input, output, method=method, level=level, variant=variant, insert_token=insert_token,
                       dup_rate=dup_rate, show_limit=show_limit, encoding_errors=encoding_errors)
    tokenizer = load_tokenizer(model) if needs_tokenizer(method, level, insert_token) else None
    augmenter = Augmenter(tokenizer, method, level, dup_rate, variant, insert_token, seed)
    result = augment_file(augmenter, input, output, encoding_errors=encoding_errors, show_limit=show_limit if show else 0,
                          progress=_augment_bar if ui.console.is_terminal else None)  # counting the lines is a pass: only for a bar
    to_file = output is not None and output != "-"
    if to_file:
        ui.info(f"augment: {result.lines} lines, {result.changed} tokens changed -> {output}")
    if show and not result.reader_gone:
        _augment_show(augmenter, result.shown, result.lines, to_file)


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


# ---- eval-sts / length-analysis ----------------------------------------------------------------
DATA_DIR_HELP = ("SentEval's data/downstream folder (with STS/ and SICK/) or a parent of it, e.g. ../shared/data "
                 "(default: $ESIMCSE_DATA_DIR, else the first of ./SentEval/data/downstream, ./data/downstream and "
                 "~/.local/share/esimcse/downstream that holds it).")
TASKS_HELP = "Comma-separated tasks: STS12,STS13,STS14,STS15,STS16,STSBenchmark,SICKRelatedness (default: all)."
BUCKETS_HELP = "Length-difference buckets, inclusive ranges from 0 with an open end: default 0-3,4- (the paper's <=3 vs >3)."
BOOTSTRAP_HELP = "Resample each task's scored pairs N times (default 1000 when given alone; at least 100) for percentile intervals."
CI_HELP = "Interval level in (0, 1) (default 0.95)."
SEED_HELP = "Seed of the bootstrap resampling (default 42); the same seed gives the same intervals."


def _bootstrap_default(args: List[str]) -> List[str]:
    """Give a bare ``--bootstrap`` (no number after it) its default N, which click cannot do for an int option."""
    out: List[str] = []
    for i, tok in enumerate(args):
        if tok == "--":
            return out + args[i:]
        out.append(tok)
        if tok == "--bootstrap":
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or not nxt.lstrip("-").isdigit():
                from esimcse_cli.core.stats import DEFAULT_REPLICATES

                out.append(str(DEFAULT_REPLICATES))
    return out


def _fmt_score(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _fmt_ci(value, ci) -> str:
    """``82.03 [80.9, 83.1]`` with an interval, else the score alone."""
    if value is None or not ci:
        return _fmt_score(value)
    return f"{value:.2f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _bucket_cell(b: dict) -> str:
    return f"{_fmt_ci(b['spearman'], b.get('ci'))} ({b['pairs']})"


def _eval_table(result: dict, title: str):
    names = [b["name"] for b in result.get("buckets", [])]
    table = ui.new_table(title, "task", "pairs", "Spearman")
    table.columns[1].justify = "right"
    table.columns[2].justify = "right"
    for name in names:
        table.add_column(f"Δlen {name}", justify="right")
    for task, e in result["tasks"].items():
        table.add_row(task, str(e["pairs"]), _fmt_ci(e["spearman"], e.get("ci")), *[_bucket_cell(b) for b in e.get("buckets", [])])
    total = sum(e["pairs"] for e in result["tasks"].values())
    table.add_section()
    table.add_row("avg", str(total), _fmt_ci(result["avg"], result.get("avg_ci")), *([""] * len(names)), style="bold")
    return table


def _length_tables(report: dict) -> list:
    """length-analysis's tables: Spearman per bucket and the gap, the gap differences (several models), the probe."""
    results = report["models"]
    specs = [m["model"] for m in results]
    labels = dict(zip(specs, _short_labels(specs)))
    tables = [_length_table(report, labels)]
    if len(results) > 1:
        tables.append(_gap_diff_table(report, labels))
    if report["probe"] is not None:
        tables.append(_probe_table(report, labels))
    return tables


def _length_table(report: dict, labels: dict):
    from rich.text import Text

    names = [b["name"] for b in report["buckets"]]
    table = ui.new_table(f"Spearman x100 by length difference |len(a) - len(b)| in {report['length_unit']} "
                         f"(gap = bucket {names[0]} − bucket {names[-1]})", "model", "task", "pairs", "Spearman")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("gap", justify="right")
    for m in report["models"]:
        for task, e in m["tasks"].items():
            table.add_row(labels[m["model"]], task, str(e["pairs"]), _fmt_ci(e["spearman"], e.get("ci")),
                          *[_bucket_cell(b) for b in e["buckets"]], _fmt_ci(m["gap"][task], (m.get("gap_ci") or {}).get(task)))
        table.add_row(labels[m["model"]], "avg", "", _fmt_ci(m["avg"], m.get("avg_ci")), *([""] * len(names)),
                      _fmt_ci(m["avg_gap"], m.get("avg_gap_ci")), style="bold")
        table.add_section()
    bs = report["bootstrap"]
    table.caption = Text(f"[lo, hi]: {bs['level']:.0%} bootstrap interval ({bs['n']} replicates, seed {bs['seed']}); (n): pairs in the bucket.")
    return table


def _gap_diff_table(report: dict, labels: dict):
    from rich.text import Text

    results, bs = report["models"], report["bootstrap"]
    first = labels[results[0]["model"]]
    task_names = list(results[0]["tasks"])
    table = ui.new_table(f"Gap difference from {first}: gap(model) − gap({first}), paired bootstrap", "model", *task_names, "avg")
    for col in table.columns[1:]:
        col.justify = "right"
    for m in results[1:]:
        table.add_row(labels[m["model"]], *[_diff_cell(m["gap_diff"][t], bs["n"]) for t in task_names],
                      _diff_cell(m["avg_gap_diff"], bs["n"]))
    table.caption = Text(f"[lo, hi]: {bs['level']:.0%} interval of the difference, measured on the same resamples; * (green: higher, "
                         f"red: lower): p < {1 - bs['level']:.2g}, a difference larger than the resampling noise.")
    return table


def _probe_table(report: dict, labels: dict):
    from esimcse_cli.core.length import MIN_PROBE_POINT

    probe = report["probe"]
    src = "STS sentences" if probe["source"] == "sts" else probe["source"]
    table = ui.new_table(
        f"Repetition probe: {probe['sentences']} {src}, dup-rate {probe['dup_rate']:g} ({probe['variant']}), seed {probe['seed']}",
        "model", "mean inserted", "mean cosine", "slope / inserted token")
    for m in report["models"]:
        p = m["probe"]
        slope = "—" if p["slope"] is None else f"{p['slope']:+.5f}"
        mc = "—" if p["mean_cosine"] is None else f"{p['mean_cosine']:.4f}"
        mi = "—" if p["mean_inserted"] is None else f"{p['mean_inserted']:.2f}"
        table.add_row(labels[m["model"]], mi, mc, slope)
    sparse = sum(1 for m in report["models"] for p in m["probe"].get("per_count", []) if p.get("sparse"))
    if sparse:
        table.caption = (f"{sparse} per-count mean(s) rest on fewer than {MIN_PROBE_POINT} sentences: "
                         "\"sparse\" in the JSON, hollow and unconnected in the plot.")
    return table


def _short_labels(specs: List[str]) -> List[str]:
    """Model labels for tables: the shortest path tails that still tell the models apart."""
    parts = [Path(s).parts or (s,) for s in specs]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(set(specs)):
            return labels
    return list(specs)


@app.command("eval-sts")
def eval_sts(
    data: Optional[str] = typer.Argument(None, metavar="DATA_DIR", help="Same as --data-dir."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", "-d", help=DATA_DIR_HELP),
    tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help=TASKS_HELP),
    split: str = typer.Option("test", "--split", help="Split for STSBenchmark and SICKRelatedness: test | dev | train (SICK dev = trial)."),
    aggregate: str = typer.Option("all", "--aggregate", help="STS12-16 score: all (SentEval's, one Spearman over all subsets) | mean | wmean."),
    pairs: Optional[List[str]] = typer.Option(None, "--pairs", help="Your own scored pairs: sentence1<TAB>sentence2<TAB>score (.tsv, header optional), or .csv/.jsonl/.parquet. Repeatable."),
    pairs_columns: Optional[str] = typer.Option(None, "--pairs-columns", help="Columns of --pairs files: sentence1,sentence2,score (names or 0-based indices)."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    pooling: Optional[str] = typer.Option(None, "--pooling", help=POOLING_HELP),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Max tokens per sentence (default: the model's own limit)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Sentences per forward pass."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    bucket_by_length: bool = typer.Option(False, "--bucket-by-length", help="Also report Spearman within length-difference buckets."),
    buckets: Optional[str] = typer.Option(None, "--buckets", help=BUCKETS_HELP + " Implies --bucket-by-length."),
    length_unit: str = typer.Option("words", "--length-unit", help="words (whitespace words of the stored text) | tokens (model sub-words, no specials)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", metavar="[N]", help=BOOTSTRAP_HELP),
    ci: Optional[float] = typer.Option(None, "--ci", help=CI_HELP + " Implies --bootstrap."),
    seed: Optional[int] = typer.Option(None, "--seed", help=SEED_HELP),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write the full result as JSON (schema in the README)."),
    csv_path: Optional[str] = typer.Option(None, "--csv", help="Write task / subset / bucket rows as CSV."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code from the model folder/hub."),
    update_card: bool = typer.Option(False, "--update-card", help="Add (or replace) the evaluation section of the --model folder's README.md model card."),
) -> None:
    """STS12-16, STS-B and SICK-R (SentEval protocol): cosine -> Spearman x100, every distinct sentence encoded once.

    Example: esimcse eval-sts ../shared/data --json sts.json
    """
    from esimcse_cli.core import card, evaluate, pairs_file, sts
    from esimcse_cli.core.models import load_encoder

    bootstrap, bucket_spec = evaluate.check_sts_args(split, aggregate, length_unit, batch_size, bootstrap=bootstrap, ci=ci,
                                                     bucket_by_length=bucket_by_length, buckets=buckets, outputs=(json_path, csv_path))
    card_dir = card.card_folder(model) if update_card else None  # the default or a hub model: refused before any work
    task_pairs = evaluate.load_tasks(sts.given_data_dir(data, data_dir), tasks, split, pairs or (), pairs_file.parse_columns(pairs_columns))
    enc = load_encoder(model, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code)
    n_distinct = len(evaluate.unique_sentences(task_pairs))
    with ui.progress_bar(n_distinct, "encoding STS sentences", unit="sent") as advance:
        result = evaluate.evaluate_loaded(enc, task_pairs, split, aggregate, bucket_spec, length_unit, batch_size, progress=advance,
                                          bootstrap=bootstrap, level=ci, seed=seed)
    n_total = result["sentences"]["total"]
    ui.info(f"{n_total} sentences, {n_distinct} distinct, encoded in {result['seconds']['encode']:.1f}s "
            f"({enc.pooling} pooling, max length {enc.max_length})")
    # the files first: a stdout that fails (a full disk behind `> file`) must not lose them
    if json_path:
        evaluate.write_json(json_path, result)
    if csv_path:
        evaluate.write_csv(csv_path, evaluate.result_rows(result), evaluate.result_columns(result))
    written_card = str(card.update_eval_section(card_dir, result)) if card_dir is not None else None
    ui.print_table(_eval_table(result, f"STS Spearman x100 — {enc.name}"))
    for written in (json_path, csv_path, written_card):
        if written:
            ui.info(f"wrote {written}")


def _entry_items(models: List[str], groups: List[str]) -> List[tuple]:
    """``--model`` and ``--group`` values in command-line order (the first is the baseline).

    Click keeps each option's values in order but not how two options interleave; the order is read back
    from the arguments (models first, then groups, where it cannot be).
    """
    kinds = []
    for tok in sys.argv[1:]:
        if tok == "--":
            break
        if tok in ("--model", "-m") or tok.startswith("--model="):
            kinds.append("model")
        elif tok == "--group" or tok.startswith("--group="):
            kinds.append("group")
    if kinds.count("model") != len(models) or kinds.count("group") != len(groups):
        kinds = ["model"] * len(models) + ["group"] * len(groups)
    values = {"model": iter(models), "group": iter(groups)}
    return [(k, next(values[k])) for k in kinds]


def _fmt_p(p, n: int) -> str:
    if p is None:
        return "—"
    return f"p<{2 / n:.2g}" if p == 0 else f"p={p:.3f}"


def _diff_cell(cell: dict, n: int):
    """``-8.52 [-9.6, -7.4] p<0.002 *``, coloured when significant."""
    from rich.text import Text

    if cell.get("diff") is None:
        return Text("—")
    ci = cell.get("diff_ci")
    text = f"{cell['diff']:+.2f}" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "") + f" {_fmt_p(cell.get('p'), n)}"
    if cell.get("significant"):
        return Text(text + " *", style="bold green" if cell["diff"] > 0 else "bold red")
    return Text(text)


def _compare_tables(report: dict) -> list:
    bs = report["bootstrap"]
    labels = [m["label"] for m in report["models"]]
    heads = {m["label"]: f"{m['label']} ({len(m['members'])} seeds)" if m["kind"] == "group" else m["label"] for m in report["models"]}
    base = report["baseline"]
    legend = (f"Δ = model − {base}, with its {bs['level']:.0%} paired-bootstrap interval and p-value ({bs['n']} replicates, seed "
              f"{bs['seed']}); * (green: higher, red: lower): p < {1 - bs['level']:.2g}, a difference larger than the resampling noise.")
    table = ui.new_table(f"compare: Spearman x100 ({report['split']} split, {report['aggregate']} for STS12-16)", "task", "pairs",
                         *[heads[x] for x in labels], *[f"Δ {x}" for x in labels[1:]])
    for col in table.columns[1:]:
        col.justify = "right"
    table.caption = legend
    rows = [(t, str(e["pairs"]), e["models"]) for t, e in report["tasks"].items()]
    total = sum(e["pairs"] for e in report["tasks"].values())
    for i, (task, pairs, cells) in enumerate(rows + [("avg", str(total), report["avg"]["models"])]):
        if i == len(rows):
            table.add_section()
        table.add_row(task, pairs, *[_fmt_ci(cells[x]["spearman"], cells[x]["ci"]) for x in labels],
                      *[_diff_cell(cells[x], bs["n"]) for x in labels[1:]], style="bold" if task == "avg" else None)
    tables = [table]
    if report.get("buckets"):
        bt = ui.new_table(f"compare by length difference |len(a) - len(b)| in {report['length_unit']}", "task", "bucket",
                          *[heads[x] for x in labels], *[f"Δ {x}" for x in labels[1:]])
        for col in bt.columns[2:]:
            col.justify = "right"
        bt.caption = legend
        for task, e in report["tasks"].items():
            for b in e["buckets"]:
                c = b["models"]
                bt.add_row(task, b["name"], *[f"{_fmt_ci(c[x]['spearman'], c[x]['ci'])} ({c[x]['pairs']})" for x in labels],
                           *[_diff_cell(c[x], bs["n"]) for x in labels[1:]])
            bt.add_section()
        tables.append(bt)
    return tables


@app.command("compare")
def compare_cmd(
    data: Optional[str] = typer.Argument(None, metavar="DATA_DIR", help="Same as --data-dir."),
    models: Optional[List[str]] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Repeat; the first model (or group) is the baseline."),
    groups: Optional[List[str]] = typer.Option(None, "--group", help="NAME=PATH,PATH,...: several seeds of one method in place of a --model; scored as their mean, its interval includes the seed spread."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", "-d", help=DATA_DIR_HELP),
    tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help=TASKS_HELP),
    split: str = typer.Option("test", "--split", help="Split for STSBenchmark and SICKRelatedness: test | dev | train."),
    aggregate: str = typer.Option("all", "--aggregate", help="STS12-16 score: all | mean | wmean (as eval-sts)."),
    pairs: Optional[List[str]] = typer.Option(None, "--pairs", help="Your own scored pairs (as eval-sts). Repeatable."),
    pairs_columns: Optional[str] = typer.Option(None, "--pairs-columns", help="Columns of --pairs files: sentence1,sentence2,score."),
    bucket_by_length: bool = typer.Option(False, "--bucket-by-length", help="Also compare within length-difference buckets."),
    buckets: Optional[str] = typer.Option(None, "--buckets", help=BUCKETS_HELP + " Implies --bucket-by-length."),
    length_unit: str = typer.Option("words", "--length-unit", help="words | tokens (each model's own sub-words)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", metavar="N", help="Paired bootstrap replicates (default 1000; at least 100)."),
    ci: Optional[float] = typer.Option(None, "--ci", help=CI_HELP + " Also the test's level: significant means p < 1 - level."),
    seed: Optional[int] = typer.Option(None, "--seed", help=SEED_HELP),
    pooling: Optional[str] = typer.Option(None, "--pooling", help=POOLING_HELP + " Applies to every model."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Max tokens per sentence (default: each model's own limit)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Sentences per forward pass."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write the full report as JSON (schema in the README)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code from the model folders/hub."),
) -> None:
    """Is the difference real? Score models on the same pairs; each difference from the first gets a paired bootstrap test.

    Example: esimcse compare ../shared/data -m runs/simcse -m runs/esimcse --tasks stsb,sick --json cmp.json
    """
    from esimcse_cli.core import compare, evaluate, pairs_file, stats, sts

    n, level, bucket_spec = compare.check_compare_args(split, aggregate, length_unit, batch_size, bootstrap=bootstrap, ci=ci,
                                                       bucket_by_length=bucket_by_length, buckets=buckets, json_path=json_path)
    items = _entry_items(list(models or []), list(groups or []))
    model_specs = [v for k, v in items if k == "model"]
    short = iter(_short_labels(model_specs)) if model_specs else iter(())
    entries = compare.build_entries(items, [next(short) if k == "model" else "" for k, _ in items])
    compare.check_models(entries)
    task_pairs = evaluate.load_tasks(sts.given_data_dir(data, data_dir), tasks, split, pairs or (), pairs_file.parse_columns(pairs_columns))
    report = compare.compare_models(
        entries, task_pairs, split=split, aggregate=aggregate, buckets=bucket_spec, length_unit=length_unit, n=n, level=level,
        seed=stats.DEFAULT_SEED if seed is None else seed, pooling=pooling, max_length=max_length, device=device,
        batch_size=batch_size, trust_remote_code=trust_remote_code,
        progress=lambda label, total: ui.progress_bar(total, f"encoding {label}", unit="sent"),
    )
    if json_path:  # the file first: a stdout that fails must not lose it
        evaluate.write_json(json_path, report)
    for table in _compare_tables(report):
        ui.print_table(table)
    if json_path:
        ui.info(f"wrote {json_path}")


@app.command("length-analysis")
def length_analysis_cmd(
    data: Optional[str] = typer.Argument(None, metavar="DATA_DIR", help="Same as --data-dir."),
    models: Optional[List[str]] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Repeat to compare models (default: the bundled model)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", "-d", help=DATA_DIR_HELP),
    tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help=TASKS_HELP),
    split: str = typer.Option("test", "--split", help="Split for STSBenchmark and SICKRelatedness: test | dev | train."),
    buckets: Optional[str] = typer.Option(None, "--buckets", help=BUCKETS_HELP),
    length_unit: str = typer.Option("words", "--length-unit", help="words | tokens (model sub-words, no specials)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help=POOLING_HELP),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Max tokens per sentence (default: each model's own limit)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Sentences per forward pass."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    probe_sentences: int = typer.Option(1000, "--probe-sentences", help="Sentences in the repetition probe (0: no probe)."),
    probe_corpus: Optional[str] = typer.Option(None, "--probe-corpus", help="Sample probe sentences from this text file (one per line) instead of the STS sentences."),
    dup_rate: float = typer.Option(0.32, "--dup-rate", help="Repetition rate of the probe's word-repeated copies."),
    variant: str = typer.Option("paper", "--variant", help="Repeat-count formula of the probe: paper | official."),
    seed: int = typer.Option(42, "--seed", help="Seed for the probe's sample and repetitions, and for the bootstrap."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", metavar="N", help="Bootstrap replicates of the intervals and the paired gap differences (default 1000; at least 100)."),
    ci: Optional[float] = typer.Option(None, "--ci", help=CI_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write a grouped bar chart (png/pdf/svg); needs matplotlib (the 'plot' extra)."),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write the full report as JSON."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code from the model folder/hub."),
) -> None:
    """The paper's length study: Spearman per length-difference bucket, the first-last gap, and a repetition probe.

    Example: esimcse length-analysis -m runs/simcse -m runs/esimcse --data-dir ../shared/data --plot len.png
    """
    from esimcse_cli.core import evaluate, length, sts

    specs = list(models or [])
    n_boot, level, bucket_spec = length.check_length_args(
        split, length_unit, batch_size, probe_sentences=probe_sentences, variant=variant, dup_rate=dup_rate, bootstrap=bootstrap,
        ci=ci, buckets=buckets, json_path=json_path, plot=plot, models=specs)
    report = length.length_analysis(
        specs, sts.given_data_dir(data, data_dir), tasks, split=split, buckets=bucket_spec, length_unit=length_unit,
        batch_size=batch_size, probe_sentences=probe_sentences, probe_corpus=probe_corpus, dup_rate=dup_rate, variant=variant,
        seed=seed, pooling=pooling, max_length=max_length, device=device, bootstrap=n_boot, level=level,
        trust_remote_code=trust_remote_code, progress=lambda label, total: ui.progress_bar(total, label, unit="sent"))
    for table in _length_tables(report):
        ui.print_table(table)
    if json_path:
        evaluate.write_json(json_path, report)
        ui.info(f"wrote {json_path}")
    if plot:
        length.plot_report(report, plot)
        ui.info(f"wrote {plot}")


# ---- train -----------------------------------------------------------------------------------
_TRAIN_EXTRA = "loss {task.fields[loss]} · dev {task.fields[dev]} · best {task.fields[best]} · {task.fields[sps]} sent/s"


def _f(value, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


@app.command("train")
def train_cmd(
    corpus: Optional[str] = typer.Argument(None, help="Training sentences: one per line (- = stdin), or .csv/.tsv/.jsonl/.parquet with --text-column."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output folder (default: esimcse-model)."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file of options; command-line flags override it."),
    preset: Optional[str] = typer.Option(None, "--preset", help="The paper's hyperparameters: bert-base | bert-large | roberta-base | roberta-large."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    method: Optional[str] = typer.Option(None, "--method", help="esimcse (default) | simcse: sets the defaults of the two switches below."),
    repetition: Optional[bool] = typer.Option(None, "--repetition/--no-repetition", help="Build positives by word repetition (ESimCSE)."),
    momentum_queue: Optional[bool] = typer.Option(None, "--momentum-queue/--no-momentum-queue", help="Add momentum-encoder queue negatives."),
    dup_rate: Optional[float] = typer.Option(None, "--dup-rate", help="Repetition rate (default 0.32)."),
    repetition_variant: Optional[str] = typer.Option(None, "--repetition-variant", help="paper: count ~ U{0..max(2, int(r*N))} | official: the released code, randrange(min(10, int(r*L))) with "
         "L = N+2 counting [CLS]/[SEP] (0 when int(r*L) is 0)."),
    augmentation: Optional[str] = typer.Option(None, "--augmentation", help="Positive builder when --repetition is on: repetition (default) | insertion | deletion (the paper's baselines)."),
    insert_token: Optional[str] = typer.Option(None, "--insert-token", help="For --augmentation insertion: random | stopword | mask."),
    momentum: Optional[float] = typer.Option(None, "--momentum", help="EMA coefficient m (default 0.995)."),
    momentum_variant: Optional[str] = typer.Option(None, "--momentum-variant", help="paper (a copy of the model with its own MLP, EMA after each step) | official, the released code (online "
         "MLP, EMA in the forward, momentum encoder starting from random weights, --max-grad-norm 1.0 unless given)."),
    queue_ratio: Optional[float] = typer.Option(None, "--queue-ratio", help="Queue size as a multiple of the batch size (default 2.5)."),
    queue_size: Optional[int] = typer.Option(None, "--queue-size", help="Queue size in sentences (overrides --queue-ratio)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Softmax temperature (default 0.05)."),
    pooler: Optional[str] = typer.Option(None, "--pooler", help="Training pooler: auto (default: the pooling the model declares, e.g. avg for the bundled model; cls for a raw BERT) | cls ([CLS] + MLP in training, raw [CLS] at test) | cls_before_pooler | avg | avg_first_last | avg_top2."),
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
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="linear (decay to 0, default) | constant."),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step (default 1)."),
    max_grad_norm: Optional[float] = typer.Option(None, "--max-grad-norm", help="Clip the gradient norm (default: off; 1.0 with --momentum-variant official, as the released code)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 42)."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast (CUDA only)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    dev_data: Optional[str] = typer.Option(None, "--dev-data", help="SentEval data folder: select the best model on STS-B dev (default: $ESIMCSE_DATA_DIR, the corpus's folder, ./SentEval/data/downstream, if any holds STS-B dev; 'none': off)."),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps", help="Score STS-B dev every N steps (default 125)."),
    log_steps: Optional[int] = typer.Option(None, "--log-steps", help="Write a metrics.jsonl line every N steps (default 10)."),
    save_steps: Optional[int] = typer.Option(None, "--save-steps", help="Save resumable state every N steps (default 500; 0 = only on interrupt)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Column to read from csv/tsv/jsonl/parquet."),
    dedupe: Optional[bool] = typer.Option(None, "--dedupe/--no-dedupe", help="Drop repeated sentences (first one kept)."),
    encoding_errors: Optional[str] = typer.Option(None, "--encoding-errors", help="strict | replace | ignore, for text that is not UTF-8."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the state saved in the output folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder's run."),
    keep_state: Optional[bool] = typer.Option(None, "--keep-state/--no-keep-state", help="Keep the resumable state after a finished run."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help="Allow custom model code from the model folder/hub."),
) -> None:
    """Train sentence embeddings with ESimCSE (or SimCSE, or any ablation) and write a model folder."""
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.trainer import TrainInterrupted, config_for_resume, train

    values = dict(
        corpus=corpus, output_dir=output, preset=preset, model=model, method=method, repetition=repetition,
        momentum_queue=momentum_queue, dup_rate=dup_rate, repetition_variant=repetition_variant, augmentation=augmentation,
        insert_token=insert_token, momentum=momentum,
        momentum_variant=momentum_variant, queue_ratio=queue_ratio, queue_size=queue_size, temperature=temperature,
        pooler=pooler, mlp=mlp, dropout=dropout, max_length=max_length, split_by_length=split_by_length, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, epochs=epochs, max_steps=max_steps, warmup=warmup, scheduler=scheduler,
        grad_accum=grad_accum, max_grad_norm=max_grad_norm, seed=seed, bf16=bf16, device=device, dev_data=dev_data,
        eval_steps=eval_steps, log_steps=log_steps, save_steps=save_steps, text_column=text_column, dedupe=dedupe,
        encoding_errors=encoding_errors, overwrite=overwrite or None, keep_state=keep_state, trust_remote_code=trust_remote_code,
    )
    if resume:
        if output is None:
            raise EsimcseError("--resume needs -o OUT_DIR, the folder of the interrupted run")
        cfg = config_for_resume(output, values)
        if cfg.dev_data is not None and str(cfg.dev_data).lower() == "none":  # as without --resume: selection off
            cfg.dev_data = None
    else:
        cfg = build_config(values, config)
        if cfg.output_dir is None:
            cfg.output_dir = "esimcse-model"
        if cfg.corpus is None:
            raise EsimcseError("no corpus given: esimcse train CORPUS [-o OUT_DIR]")
        if cfg.dev_data is None:
            from esimcse_cli.core.sts import discover_dev_data

            found = discover_dev_data(cfg.corpus)
            if found is not None:
                cfg.dev_data = str(found)
                ui.info(f"selecting on STS-B dev from {found} (found without --dev-data; --dev-data none turns it off)")
        elif str(cfg.dev_data).lower() == "none":
            cfg.dev_data = None
    main_rank = os.environ.get("RANK", "0") == "0"

    with ui.deferred_progress("training", unit="step", extra=_TRAIN_EXTRA) as start:
        bar = {}

        def on_start(info: dict) -> None:
            c = info["corpus"]
            ui.info(
                f"corpus {c['source']}: {c['sentences']:,} sentences ({c['blank']:,} blank, {c['duplicates']:,} duplicate lines skipped); "
                f"model {info['model']} on {info['device']} x{info['world_size']}; queue {info['queue_size']}; "
                f"{info['total_steps']:,} steps" + (f", resuming at {info['start_step']:,}" if info["start_step"] else "")
            )
            ui.info(f"pooler {info['pooler']}{' + training-only MLP' if info['mlp'] else ''}, exported as {info['export_pooling']} ({info['pooler_source']})")
            bar["advance"] = start(info["total_steps"])
            if info["start_step"]:
                bar["advance"](info["start_step"])

        def on_step(row: dict) -> None:
            adv = bar.get("advance")
            if adv is None:
                return
            fields = {"best": _f(row.get("best_dev"))}
            if row.get("loss") is not None:
                fields["loss"] = _f(row["loss"], "{:.4f}")
            if row.get("sentences_per_s"):
                fields["sps"] = _f(row["sentences_per_s"], "{:,.0f}")
            if "dev_spearman" in row:
                fields["dev"] = _f(row["dev_spearman"])
            adv(0 if row["step"] == 0 else 1, **fields)

        try:
            res = train(cfg, on_start=on_start, on_step=on_step, command=sys.argv)
        except TrainInterrupted as exc:
            if main_rank:
                ui.warn(str(exc))
            raise typer.Exit(exc.exit_code)
    if not main_rank:
        return
    table = ui.new_table("esimcse train", "what", "value")
    table.add_row("method", f"{cfg.method} (repetition {'on' if cfg.resolved().repetition else 'off'}, momentum queue {'on' if cfg.resolved().momentum_queue else 'off'})")
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


def _environment_errnos() -> frozenset:
    import errno

    names = ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EMFILE", "ENFILE", "EIO", "ENAMETOOLONG", "ELOOP", "EFBIG")
    return frozenset(getattr(errno, n) for n in names if hasattr(errno, n))


_ENVIRONMENT_ERRNOS = _environment_errnos()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one-line messages.

    Exit codes: 0 success; 1 internal error (a bug); 2 bad input or usage; 130 SIGINT; 143 SIGTERM
    (an interrupted run leaves no partial output file).
    """
    import signal

    from esimcse_cli.core import signals

    _state["debug"] = os.environ.get("ESIMCSE_DEBUG", "") not in ("", "0")  # --debug sets it again per run
    saved = signals.install_interrupt_handlers()  # SIGINT/SIGTERM -> KeyboardInterrupt, the signal remembered
    try:
        rv = app(args=_bootstrap_default(sys.argv[1:]), standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors (Typer vendors click): one line, no box
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # the help text was already shown
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None and getattr(ctx, "command_path", None) else ""
        ui.error(_one_line(exc.format_message()) + hint)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        ui.error("aborted")
        sys.exit(1)
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
        if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:  # disk full, read-only, no permission: not a bug
            where = f"{exc.filename}: " if exc.filename else ""
            ui.error(f"{where}{exc.strerror or exc}")
            sys.exit(2)
        ui.error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (rerun with --debug for the traceback)")
        sys.exit(1)
    finally:
        signals.restore(saved)
    if isinstance(rv, int) and rv:
        got = signals.last_signal()
        if got is not None and rv == 130:  # Typer turns KeyboardInterrupt into exit 130
            rv = 128 + int(got)
            ui.error(f"interrupted ({signal.Signals(got).name})")
        sys.exit(rv)
