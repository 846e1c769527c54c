"""Time what ``--bootstrap`` adds to ``eval-sts``: N resamples of the cached cosines of the seven tasks.

``esimcse eval-sts ../shared/data --bootstrap 1000`` runs ``evaluate.evaluate_loaded(..., bootstrap=1000)``:
``evaluate.score_tasks`` (one encode), ``evaluate.summarise`` (the points), ``stats.add_intervals``. This
script runs those same steps once, timing each, then repeats the bootstrap alone on the cached scores
(nothing is re-encoded) ``--rounds`` times for a median: ``--aggregate all`` and ``mean``, with the default length buckets, and paired
over two models as ``compare`` runs it. It also checks the intervals: each contains its point, and the STS-B
interval's width against an independent percentile bootstrap (plain index resampling, scipy's spearmanr).

Prints a markdown snippet; ``--write-results`` also writes the ``bootstrap_speed`` section of docs/RESULTS.md.

    .venv/bin/python benchmarks/bootstrap_speed.py --write-results            # the seven tasks, N = 1000
    .venv/bin/python benchmarks/bootstrap_speed.py --tasks stsb --rounds 1     # a smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _results import publish  # benchmarks/ is on sys.path when a script here runs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", default=None, help="comma-separated subset (default: all seven)")
    ap.add_argument("--n", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--rounds", type=int, default=3, help="timed repeats of each bootstrap variant")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--write-results", action="store_true", help="also write the 'bootstrap_speed' section of docs/RESULTS.md")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from esimcse_cli.core import evaluate, stats
    from esimcse_cli.core.models import load_encoder

    load_start = os.getloadavg()[0]  # the machine is shared: say how busy it was
    enc = load_encoder(args.model, device=args.device)
    task_pairs = evaluate.load_tasks(args.data_dir, args.tasks)
    n_pairs = sum(len(p) for p in task_pairs.values())

    t0 = time.perf_counter()
    scores, info = evaluate.score_tasks(enc, task_pairs, "words")  # as evaluate_loaded does (lengths only for the bucket row)
    result = {"model": enc.name, "tasks": evaluate.summarise(scores)}
    result["avg"] = round(float(np.mean([e["spearman"] for e in result["tasks"].values()])), 4)
    t1 = time.perf_counter()
    stats.add_intervals(result, scores, n=args.n)
    t2 = time.perf_counter()
    sec = {"encode": info["encode_s"], "points": t1 - t0 - info["encode_s"], "bootstrap": t2 - t1}
    wall = t2 - t0
    print(f"eval-sts --bootstrap {args.n} steps: {wall:.1f}s (encode {sec['encode']:.1f}s, bootstrap {sec['bootstrap']:.2f}s)", file=sys.stderr)
    one = [stats.Entry("m", [scores])]
    variants = [
        (f"{len(task_pairs)}-task scores + average, `--aggregate all` (what `eval-sts --bootstrap` adds)", lambda: stats.bootstrap(one, "all", None, args.n)),
        ("`--aggregate mean` (each STS12-16 subset's Spearman per replicate)", lambda: stats.bootstrap(one, "mean", None, args.n)),
        ("`--bucket-by-length` (two buckets too)", lambda: stats.bootstrap(one, "all", evaluate.DEFAULT_BUCKETS, args.n)),
        ("paired, two models (`compare`)", lambda: stats.bootstrap(one + [stats.Entry("m2", [dict(scores)])], "all", None, args.n)),
    ]
    times = {}
    for label, run in variants:
        times[label] = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - t)
        print(f"  {label}: {', '.join(f'{x:.2f}' for x in times[label])}s", file=sys.stderr)

    contained = all(e["ci"][0] <= e["spearman"] <= e["ci"][1] for e in result["tasks"].values() if e["ci"])
    contained = contained and result["avg_ci"][0] <= result["avg"] <= result["avg_ci"][1]
    check = ""
    if "STSBenchmark" in task_pairs:
        pairs = task_pairs["STSBenchmark"]
        cos = scores["STSBenchmark"].cos
        gold = np.array([p.score for p in pairs])
        rng = np.random.default_rng(12345)
        reps = []
        for _ in range(args.n):
            i = rng.integers(0, len(pairs), len(pairs))
            reps.append(spearmanr(cos[i], gold[i]).statistic * 100)
        lo, hi = np.percentile(reps, [2.5, 97.5])
        ours = result["tasks"]["STSBenchmark"]["ci"]
        check = (f" STS-B test interval width {ours[1] - ours[0]:.2f} against {hi - lo:.2f} from an independent percentile "
                 f"bootstrap (plain index resampling, scipy's spearmanr, another seed): ratio {(ours[1] - ours[0]) / (hi - lo):.2f}.")

    md = [f"## Bootstrap intervals: cost and check ({len(task_pairs)} tasks, {n_pairs} pairs, N = {args.n})\n",
          f"Model: {enc.name} ({enc.pooling} pooling, max length {enc.max_length}), device {args.device}, "
          f"{torch.get_num_threads()} torch thread(s). The steps of `esimcse eval-sts {os.path.relpath(args.data_dir, REPO)} "
          f"--bootstrap {args.n}` took {wall:.1f} s: encoding {sec['encode']:.1f} s, point estimates {sec['points']:.2f} s and "
          f"the bootstrap **{sec['bootstrap']:.2f} s**. The bootstrap resamples the cached cosines (nothing is re-encoded); "
          "the rows below repeat it alone.\n",
          "| bootstrap over the cached scores | median s | all rounds s |", "|---|---:|---:|"]
    for label, ts in times.items():
        md.append(f"| {label} | {statistics.median(ts):.2f} | {', '.join(f'{x:.2f}' for x in ts)} |")
    md.append("\n| task | pairs | Spearman | 95% interval |")
    md.append("|---|---:|---:|---|")
    for t, e in result["tasks"].items():
        md.append(f"| {t} | {e['pairs']} | {e['spearman']:.2f} | [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}] |")
    md.append(f"| avg | {n_pairs} | {result['avg']:.2f} | [{result['avg_ci'][0]:.2f}, {result['avg_ci'][1]:.2f}] |")
    md.append(f"\nEvery interval contains its point: {'yes' if contained else 'NO'}.{check}")
    load_end, cpus = os.getloadavg()[0], os.cpu_count() or 1
    busy = max(load_start, load_end) > cpus
    md.append(f"\nLoad average (1 min) {load_start:.2f} at the start, {load_end:.2f} at the end, on {cpus} CPUs"
              + (" (above the CPU count: other work shared them, and every time here is longer than on an idle machine)."
                 if busy else " (below the CPU count: nothing else heavy ran)."))
    publish("bootstrap_speed", "\n".join(md), args.write_results)
    return 0 if contained else 1


if __name__ == "__main__":
    sys.exit(main())
