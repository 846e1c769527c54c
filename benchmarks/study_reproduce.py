"""Re-run one finished study cell from the command its JSON records, and say whether it lands within the seed spread.

    python benchmarks/study_reproduce.py simcse-s43

The cell's ``command`` (``python benchmarks/study.py --cells NAME --force``) is run as recorded, with only its
output sent elsewhere (``--results-dir`` / ``--runs-dir`` in a temporary folder, ``--no-report``), so the study's
own JSON is left as it is. The re-run's test scores are then set against the recorded ones and against the
spread of the cell's seeds (every finished cell of the same label), and written to
``docs/results/reproduce/<cell>.json``, which the study report quotes. Exit 0 when the re-run's 7-task average
lies within the seeds' range (or, with one seed, equals the recording to 0.01), 1 when not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

import study_report  # noqa: E402

OUT_DIR = "reproduce"  # under the results folder


def spread(docs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The 7-task averages of a label's seeds: values, min, max, mean and sample std."""
    vals = [d["eval"]["avg"] for d in docs if d["eval"].get("avg") is not None]
    m, s, n = study_report.mean_std(vals)
    return {"cells": [d["cell"] for d in docs], "avg": vals, "min": min(vals) if vals else None,
            "max": max(vals) if vals else None, "mean": m, "std": s}


def verdict(rerun_avg: float, recorded_avg: float, sp: Dict[str, Any]) -> bool:
    if len(sp["avg"]) >= 2:
        return sp["min"] <= rerun_avg <= sp["max"]
    return abs(rerun_avg - recorded_avg) <= 0.01


def summary(recorded: Dict[str, Any], rerun: Dict[str, Any], sp: Dict[str, Any]) -> Dict[str, Any]:
    tasks = {t: {"recorded": (recorded["eval"]["tasks"].get(t) or {}).get("spearman"),
                 "rerun": (rerun["eval"]["tasks"].get(t) or {}).get("spearman")} for t in study_report.TASKS}
    ra, rr = recorded["eval"]["avg"], rerun["eval"]["avg"]
    code_a = (recorded.get("code") or {}).get("package_sha256")
    code_b = (rerun.get("code") or {}).get("package_sha256")
    return {
        "cell": recorded["cell"], "label": recorded["label"], "command": recorded["command"],
        "recorded": {"avg": ra, "best_dev": recorded["train"].get("best_dev"), "best_step": recorded["train"].get("best_step"),
                     "dev_curve": recorded["train"].get("dev_curve"), "package_sha256": code_a},
        "rerun": {"avg": rr, "best_dev": rerun["train"].get("best_dev"), "best_step": rerun["train"].get("best_step"),
                  "dev_curve": rerun["train"].get("dev_curve"), "package_sha256": code_b,
                  "wall_s": rerun.get("wall_s"), "step_seconds_mean": rerun["train"].get("step_seconds_mean")},
        "tasks": tasks,
        "diff_avg": round(rr - ra, 4),
        "same_code": code_a is not None and code_a == code_b,
        "seed_spread": sp,
        "within_spread": verdict(rr, ra, sp),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/study_reproduce.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("cell", help="a finished cell (see python benchmarks/study.py --list)")
    ap.add_argument("--results-dir", default="docs/results")
    args = ap.parse_args(argv)
    os.chdir(REPO)
    res = Path(args.results_dir)
    docs = study_report.load_results(res)
    recorded = next((d for d in docs if d["cell"] == args.cell), None)
    if recorded is None or recorded.get("kind") != "train" or not recorded.get("command"):
        print(f"study_reproduce: error: {res}/{args.cell}.json is not a finished trained cell with a recorded command",
              file=sys.stderr)
        return 2
    cmd = shlex.split(recorded["command"])
    if cmd[:2] != ["python", "benchmarks/study.py"]:
        print(f"study_reproduce: error: unexpected recorded command: {recorded['command']}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="esimcse-reproduce-") as tmp:
        run = [sys.executable, *cmd[1:], "--results-dir", f"{tmp}/results", "--runs-dir", f"{tmp}/runs", "--no-report"]
        print("re-running:", " ".join(shlex.quote(a) for a in run), flush=True)
        proc = subprocess.run(run, check=False)
        out = Path(tmp) / "results" / f"{args.cell}.json"
        if proc.returncode != 0 or not out.is_file():
            print(f"study_reproduce: error: the re-run failed (exit {proc.returncode})", file=sys.stderr)
            return 2
        rerun = json.loads(out.read_text(encoding="utf-8"))
    sp = spread([d for d in docs if d["label"] == recorded["label"] and d.get("kind") == "train"])
    doc = summary(recorded, rerun, sp)
    dest = res / OUT_DIR / f"{args.cell}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = dest.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp_path, dest)
    print(f"{args.cell}: recorded {doc['recorded']['avg']:.2f}, re-run {doc['rerun']['avg']:.2f} (Δ {doc['diff_avg']:+.2f}); "
          f"seeds {sp['min']:.2f}–{sp['max']:.2f}: {'within' if doc['within_spread'] else 'OUTSIDE'} the spread; wrote {dest}")
    return 0 if doc["within_spread"] else 1


if __name__ == "__main__":
    sys.exit(main())
