"""``esimcse eval-sts`` and ``esimcse length-analysis``: Spearman tables by task and by length-difference bucket.

    eval-sts: core eval_sts (checks, tasks, model, a bar, JSON/CSV/card) -> what was encoded, the table, what was written
    length-analysis: core length_analysis (checks, a bar per model, JSON, plot) -> the tables, what was written

The files are written before the tables: a stdout that fails (a full disk behind ``> file``) must not lose them.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from esimcse_cli import console as ui
from esimcse_cli.cli.cells import bucket_cell, diff_cell, fmt_ci, short_labels
from esimcse_cli.cli.options import (
    BUCKETS_HELP,
    CI_HELP,
    MODEL_HELP,
    Backend,
    BatchSize,
    BootstrapSeed,
    BucketByLength,
    Buckets,
    Data,
    DataDir,
    Device,
    Json,
    LengthUnit,
    MaxLength,
    Model,
    Pairs,
    PairsColumns,
    PairsFormat,
    Pooling,
    Quantize,
    Split,
    Tasks,
    TrustRemoteCode,
    choice_list,
)
from esimcse_cli.core.augment import DEFAULT_DUP_RATE
from esimcse_cli.core.defaults import DEFAULT_PROBE_SENTENCES, DEFAULT_SEED
from esimcse_cli.core.models import DEFAULT_MODEL
from esimcse_cli.core.variants import VARIANTS


def eval_sts(
    data: Data = None,
    data_dir: DataDir = None,
    tasks: Tasks = None,
    split: Split = "test",
    aggregate: str = typer.Option("all", "--aggregate", help="STS12-16 score: all (SentEval's, one Spearman over all subsets) | mean | wmean."),
    pairs: Pairs = None,
    pairs_columns: PairsColumns = None,
    pairs_format: PairsFormat = "auto",
    model: Model = DEFAULT_MODEL,
    pooling: Pooling = None,
    max_length: MaxLength = None,
    batch_size: BatchSize = 64,
    device: Device = "auto",
    bucket_by_length: BucketByLength = False,
    buckets: Buckets = None,
    length_unit: LengthUnit = "words",
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", metavar="[N]",
                                             help="Resample each task's scored pairs N times (default 1000 when given alone; at least 100) for percentile intervals."),
    ci: Optional[float] = typer.Option(None, "--ci", help=CI_HELP + " Implies --bootstrap."),
    seed: BootstrapSeed = None,
    json_path: Json = None,
    csv_path: Optional[str] = typer.Option(None, "--csv", help="Write task / subset / bucket rows as CSV."),
    scores_path: Optional[str] = typer.Option(None, "--save-scores", metavar="PATH.npz",
                                              help="Write every pair's cosine (and length difference), for compare -m PATH.npz without re-encoding."),
    trust_remote_code: TrustRemoteCode = False,
    backend: Backend = "torch",
    quantize: Quantize = "none",
    update_card: bool = typer.Option(False, "--update-card", help="Add (or replace) the evaluation section of the --model folder's README.md model card."),
) -> None:
    """STS12-16, STS-B and SICK-R (SentEval protocol): cosine -> Spearman x100, every distinct sentence encoded once.

    Example: esimcse eval-sts ../shared/data --json sts.json
    """
    from esimcse_cli.core.eval_sts import eval_sts as core_eval_sts

    result, written = core_eval_sts(
        data, data_dir, tasks, split, aggregate, pairs=pairs, pairs_columns=pairs_columns, pairs_format=pairs_format,
        model=model, pooling=pooling, max_length=max_length, batch_size=batch_size, device=device, bucket_by_length=bucket_by_length, buckets=buckets,
        length_unit=length_unit, bootstrap=bootstrap, ci=ci, seed=seed, json_path=json_path, csv_path=csv_path,
        scores_path=scores_path, update_card=update_card, trust_remote_code=trust_remote_code, backend=backend, quantize=quantize, on_export=ui.info,
        progress=lambda _model, total: ui.progress_bar(total, "encoding STS sentences", unit="sent"))
    counts = result["sentences"]
    ui.info(f"{counts['total']} sentences, {counts['distinct']} distinct, encoded in {result['seconds']['encode']:.1f}s "
            f"({result['pooling']} pooling, max length {result['max_length']}, {result['backend']})")
    ui.print_table(_eval_table(result, f"STS Spearman x100 — {result['model']}"))
    for path in written:
        ui.info(f"wrote {path}")


def length_analysis_cmd(
    data: Data = None,
    models: Optional[List[str]] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Repeat to compare models (default: the bundled model)."),
    data_dir: DataDir = None,
    tasks: Tasks = None,
    split: Split = "test",
    buckets: Optional[str] = typer.Option(None, "--buckets", help=BUCKETS_HELP),
    length_unit: LengthUnit = "words",
    pooling: Pooling = None,
    max_length: MaxLength = None,
    batch_size: BatchSize = 64,
    device: Device = "auto",
    probe_sentences: int = typer.Option(DEFAULT_PROBE_SENTENCES, "--probe-sentences", help="Sentences in the repetition probe (0: no probe)."),
    probe_corpus: Optional[str] = typer.Option(None, "--probe-corpus", help="Sample probe sentences from this text file (one per line) instead of the STS sentences."),
    dup_rate: float = typer.Option(DEFAULT_DUP_RATE, "--dup-rate", help="Repetition rate of the probe's word-repeated copies."),
    variant: str = typer.Option("paper", "--variant", help=f"Repeat-count formula of the probe: {choice_list(VARIANTS)}."),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="Seed for the probe's sample and repetitions, and for the bootstrap."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", metavar="N", help="Bootstrap replicates of the intervals and the paired gap differences (default 1000; at least 100)."),
    ci: Optional[float] = typer.Option(None, "--ci", help=CI_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write a grouped bar chart (png/pdf/svg); needs matplotlib (the 'plot' extra)."),
    json_path: Json = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """The paper's length study: Spearman per length-difference bucket, the first-last gap, and a repetition probe.

    Example: esimcse length-analysis -m runs/simcse -m runs/esimcse --data-dir ../shared/data --plot len.png
    """
    from esimcse_cli.core.length import length_analysis

    report, written = length_analysis(
        data, data_dir, tasks, split, models=list(models or []), buckets=buckets, length_unit=length_unit,
        batch_size=batch_size, probe_sentences=probe_sentences, probe_corpus=probe_corpus, dup_rate=dup_rate, variant=variant,
        seed=seed, pooling=pooling, max_length=max_length, device=device, bootstrap=bootstrap, ci=ci, json_path=json_path,
        plot=plot, trust_remote_code=trust_remote_code, progress=lambda label, total: ui.progress_bar(total, label, unit="sent"))
    for table in _length_tables(report):
        ui.print_table(table)
    for path in written:
        ui.info(f"wrote {path}")


# ---- tables ------------------------------------------------------------------------------------
def _eval_table(result: dict, title: str):
    names = [b["name"] for b in result.get("buckets", [])]
    table = ui.new_table(title, "task", "pairs", "Spearman")
    table.columns[1].justify = "right"
    table.columns[2].justify = "right"
    for name in names:
        table.add_column(f"Δlen {name}", justify="right")
    for task, e in result["tasks"].items():
        table.add_row(task, str(e["pairs"]), fmt_ci(e["spearman"], e.get("ci")), *[bucket_cell(b) for b in e.get("buckets", [])])
    total = sum(e["pairs"] for e in result["tasks"].values())
    table.add_section()
    table.add_row("avg", str(total), fmt_ci(result["avg"], result.get("avg_ci")), *([""] * len(names)), style="bold")
    return table


def _length_tables(report: dict) -> list:
    """length-analysis's tables: Spearman per bucket and the gap, the gap differences (several models), the probe."""
    results = report["models"]
    specs = [m["model"] for m in results]
    labels = dict(zip(specs, short_labels(specs)))
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
            table.add_row(labels[m["model"]], task, str(e["pairs"]), fmt_ci(e["spearman"], e.get("ci")),
                          *[bucket_cell(b) for b in e["buckets"]], fmt_ci(m["gap"][task], (m.get("gap_ci") or {}).get(task)))
        table.add_row(labels[m["model"]], "avg", "", fmt_ci(m["avg"], m.get("avg_ci")), *([""] * len(names)),
                      fmt_ci(m["avg_gap"], m.get("avg_gap_ci")), style="bold")
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
        table.add_row(labels[m["model"]], *[diff_cell(m["gap_diff"][t], bs["n"]) for t in task_names],
                      diff_cell(m["avg_gap_diff"], bs["n"]))
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
