"""``esimcse compare``: --model/--group (models or saved .npz scores) in command-line order, their short labels -> core compare (checks, entries,
tasks, a bar per model, JSON) -> the tables (by task; by length-difference bucket, each task ending with its gap).
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from esimcse_cli import console as ui
from esimcse_cli.cli.cells import diff_cell, fmt_ci, short_labels
from esimcse_cli.cli.options import (
    CI_HELP,
    MODEL_HELP,
    POOLING_HELP,
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
    Pairs,
    PairsColumns,
    PairsFormat,
    Split,
    Tasks,
    TrustRemoteCode,
)


def compare_cmd(
    data: Data = None,
    models: Optional[List[str]] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Or a scores file (PATH.npz, from eval-sts --save-scores): compared without re-encoding. Repeat; the first model (or group) is the baseline."),
    groups: Optional[List[str]] = typer.Option(None, "--group", help="NAME=PATH,PATH,...: several seeds of one method in place of a --model (model folders or .npz scores files); scored as their mean, its interval includes the seed spread."),
    data_dir: DataDir = None,
    tasks: Tasks = None,
    split: Split = "test",
    aggregate: str = typer.Option("all", "--aggregate", help="STS12-16 score: all | mean | wmean (as eval-sts)."),
    pairs: Pairs = None,
    pairs_columns: PairsColumns = None,
    pairs_format: PairsFormat = "auto",
    bucket_by_length: BucketByLength = False,
    buckets: Buckets = None,
    length_unit: LengthUnit = "words",
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", metavar="N", help="Paired bootstrap replicates (default 1000; at least 100)."),
    ci: Optional[float] = typer.Option(None, "--ci", help=CI_HELP + " Also the test's level: significant means p < 1 - level."),
    seed: BootstrapSeed = None,
    pooling: Optional[str] = typer.Option(None, "--pooling", help=POOLING_HELP + " Applies to every model."),
    max_length: MaxLength = None,
    batch_size: BatchSize = 64,
    device: Device = "auto",
    json_path: Json = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Is the difference real? Score models on the same pairs; each difference from the first gets a paired bootstrap test.

    Example: esimcse compare ../shared/data -m runs/simcse -m runs/esimcse --tasks stsb,sick --json cmp.json
    """
    from esimcse_cli.core import compare

    items = _entry_items(list(models or []), list(groups or []))
    report = compare.compare(
        items, _model_labels(items), data, data_dir, tasks, split=split, aggregate=aggregate,
        pairs=pairs, pairs_columns=pairs_columns, pairs_format=pairs_format, bucket_by_length=bucket_by_length, buckets=buckets,
        length_unit=length_unit,
        bootstrap=bootstrap, ci=ci, seed=seed, pooling=pooling, max_length=max_length, device=device, batch_size=batch_size,
        json_path=json_path, trust_remote_code=trust_remote_code,
        progress=lambda label, total: ui.progress_bar(total, f"encoding {label}", unit="sent"),
    )
    for table in _compare_tables(report):
        ui.print_table(table)
    if json_path:
        ui.info(f"wrote {json_path}")


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


def _model_labels(items: List[tuple]) -> List[str]:
    """Each model's label in the tables: the shortest path tail that tells it apart ("" for a group: its NAME is its label)."""
    specs = [v for k, v in items if k == "model"]
    short = iter(short_labels(specs)) if specs else iter(())
    return [next(short) if k == "model" else "" for k, _ in items]


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
        table.add_row(task, pairs, *[fmt_ci(cells[x]["spearman"], cells[x]["ci"]) for x in labels],
                      *[diff_cell(cells[x], bs["n"]) for x in labels[1:]], style="bold" if task == "avg" else None)
    tables = [table]
    if report.get("buckets"):
        bt = ui.new_table(f"compare by length difference |len(a) - len(b)| in {report['length_unit']}", "task", "bucket",
                          *[heads[x] for x in labels], *[f"Δ {x}" for x in labels[1:]])
        for col in bt.columns[2:]:
            col.justify = "right"
        bt.caption = legend
        gaps = report.get("gaps")  # with 2 or more buckets: each model's first bucket minus its last

        def gap_row(task: str, name: str, g: dict, **kw) -> None:
            bt.add_row(task, name, *[fmt_ci(g[x]["gap"], g[x]["ci"]) for x in labels],
                       *[diff_cell(g[x], bs["n"]) for x in labels[1:]], **kw)

        for task, e in report["tasks"].items():
            for b in e["buckets"]:
                c = b["models"]
                bt.add_row(task, b["name"], *[f"{fmt_ci(c[x]['spearman'], c[x]['ci'])} ({c[x]['pairs']})" for x in labels],
                           *[diff_cell(c[x], bs["n"]) for x in labels[1:]])
            if gaps:
                gap_row(task, "gap (first − last)", gaps["tasks"][task]["models"], style="italic")
            bt.add_section()
        if gaps:
            gap_row("avg", "avg gap", gaps["avg"]["models"], style="bold")
            bt.caption = legend + " gap = first bucket's Spearman − last bucket's (the paper's length bias), on the same resamples."
        tables.append(bt)
    return tables
