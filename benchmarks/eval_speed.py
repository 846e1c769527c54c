"""Time ``eval-sts`` over the seven STS tasks against a straightforward sentence-transformers loop.

The baseline is what one would write by hand: for each task, ``SentenceTransformer.encode`` of all the
first sentences and all the second sentences, cosine with numpy, ``scipy.stats.spearmanr``. ``eval-sts``
(the core API, ``evaluate.evaluate_loaded``) encodes every distinct sentence of all tasks once, in one
call sorted by token length. Both read the same pairs (loaded once, outside the timings), use the same
model, device, max length and batch size, and run alternately in one process, ``--repeats`` times each.

Prints a markdown snippet (wall times, ratio, distinct sentences, per-task Spearman of both and their
largest difference) to stdout; exits 1 when the numbers disagree by more than ``--tolerance``.

    .venv/bin/python benchmarks/eval_speed.py --data-dir ../shared/data            # the full run
    .venv/bin/python benchmarks/eval_speed.py --limit 50 --repeats 1               # a smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _results import publish  # benchmarks/ is on sys.path when a script here runs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def baseline(st_model, task_pairs, batch_size):
    """Per task: encode all a's and all b's, cosine, Spearman x100."""
    import numpy as np
    from scipy.stats import spearmanr

    out = {}
    for task, pairs in task_pairs.items():
        a = st_model.encode([p.a for p in pairs], batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        b = st_model.encode([p.b for p in pairs], batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        a = a.astype(np.float64)
        b = b.astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        out[task] = float(spearmanr(cos, [p.score for p in pairs]).statistic * 100)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--model", default="default", help="'default' (bundled all-MiniLM-L6-v2) or a sentence-transformers folder")
    ap.add_argument("--tasks", default=None, help="comma-separated subset (default: all seven)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="first N pairs per task (smoke test)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tolerance", type=float, default=0.05, help="largest allowed |ours - baseline| per task")
    ap.add_argument("--write-results", action="store_true", help="also write the 'eval_speed' section of docs/RESULTS.md")
    ap.add_argument("--no-warmup", action="store_true")
    args = ap.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from esimcse_cli.core import evaluate
    from esimcse_cli.core.models import load_encoder, resolve_device, resolve_model_path

    device = resolve_device(args.device)
    task_pairs = evaluate.load_tasks(args.data_dir, args.tasks)
    if args.limit:
        task_pairs = {k: v[: args.limit] for k, v in task_pairs.items()}
    path, _ = resolve_model_path(args.model)
    enc = load_encoder(args.model, device=device)
    st = SentenceTransformer(path, device=device)
    st.max_seq_length = enc.max_length  # same truncation on both sides

    def ours():
        r = evaluate.evaluate_loaded(enc, task_pairs, batch_size=args.batch_size)
        return {k: v["spearman"] for k, v in r["tasks"].items()}, r

    def theirs():
        return baseline(st, task_pairs, args.batch_size)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if not args.no_warmup:  # load kernels / caches once, outside the timings
        small = {k: v[:32] for k, v in task_pairs.items()}
        evaluate.evaluate_loaded(enc, small, batch_size=args.batch_size)
        baseline(st, small, args.batch_size)

    t_ours, t_base = [], []
    res_ours = res_base = full = None
    for i in range(args.repeats):
        order = (("ours", "base") if i % 2 == 0 else ("base", "ours"))
        for which in order:
            sync()
            t0 = time.perf_counter()
            if which == "ours":
                res_ours, full = ours()
            else:
                res_base = theirs()
            sync()
            (t_ours if which == "ours" else t_base).append(time.perf_counter() - t0)
            print(f"  repeat {i + 1}: {which} {(t_ours if which == 'ours' else t_base)[-1]:.2f}s", file=sys.stderr)

    mo, mb = statistics.median(t_ours), statistics.median(t_base)
    diffs = {k: abs(res_ours[k] - res_base[k]) for k in res_ours}
    worst = max(diffs.values())
    n_pairs = sum(len(v) for v in task_pairs.values())
    s = full["sentences"]
    dev_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    md: list[str] = []
    emit = md.append
    emit(f"### eval-sts speed ({len(task_pairs)} tasks, {n_pairs} pairs{', first %d per task' % args.limit if args.limit else ''})\n")
    emit(f"Device: {dev_name}; model: {enc.name} ({enc.pooling} pooling, max length {enc.max_length}); "
          f"batch size {args.batch_size}; median of {args.repeats} alternating run(s).\n")
    emit("| | wall time (s) | sentences encoded |")
    emit("|---|---:|---:|")
    emit(f"| sentence-transformers loop (each task's a's and b's separately) | {mb:.2f} | {s['total']} |")
    emit(f"| `eval-sts` (distinct sentences once, token-length sorted) | {mo:.2f} | {s['distinct']} |")
    emit(f"\nRatio eval-sts / baseline: **{mo / mb:.2f}x** (goal <= 0.5x). "
          f"Distinct sentences: {s['distinct']} of {s['total']} ({s['distinct'] / s['total']:.0%}).\n")
    emit("| task | pairs | eval-sts | baseline | abs diff |")
    emit("|---|---:|---:|---:|---:|")
    for k in res_ours:
        emit(f"| {k} | {len(task_pairs[k])} | {res_ours[k]:.2f} | {res_base[k]:.2f} | {diffs[k]:.3f} |")
    emit(f"\nLargest difference: {worst:.3f} (tolerance {args.tolerance}). "
          f"All times: eval-sts {', '.join(f'{t:.2f}' for t in t_ours)}; baseline {', '.join(f'{t:.2f}' for t in t_base)}.")
    text = "\n".join(md).replace("### eval-sts speed", "## eval-sts speed")
    publish("eval_speed", text, args.write_results)
    if worst > args.tolerance:
        print(f"numbers disagree: largest difference {worst:.3f} > {args.tolerance}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
