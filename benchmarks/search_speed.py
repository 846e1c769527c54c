"""Time ``search``: queries/s of exact cosine top-k over a memory-mapped matrix, against a numpy brute force.

A synthetic matrix of unit rows (default 1M x 384 float32, 1.5 GB) is written once to ``--path`` (in /tmp),
in chunks, as ``encode`` writes its ``.npy``. Each query count Q is then searched ``--rounds`` times by
``core.search.search`` (torch matmul per chunk, running top-k) and by the peer, measured in the same run:
the straightforward numpy version, the same chunks scored with ``@`` and cut with ``np.argpartition``.
The file is read once before timing, so both read it from the page cache. The queries are rows of the
matrix, so each one's top hit must be its own row with cosine 1, and both must return the same rows.

Prints a markdown snippet; ``--write-results`` also writes the ``search_speed`` section of docs/RESULTS.md.

    .venv/bin/python benchmarks/search_speed.py --write-results       # 1M x 384 (needs 1.5 GB in /tmp)
    .venv/bin/python benchmarks/search_speed.py --rows 20000          # a smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _results import publish  # benchmarks/ is on sys.path when a script here runs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_matrix(path: Path, rows: int, dim: int, dtype: str, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, dim))
    for start in range(0, rows, 65536):
        x = rng.standard_normal((min(65536, rows - start), dim), dtype=np.float32)
        arr[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    arr.flush()
    del arr


def numpy_top_k(matrix, queries, k: int, chunk_rows: int):
    """The peer: per chunk ``q @ x.T`` over the rows' norms, ``np.argpartition`` to the k best, merged."""
    import numpy as np

    q = queries.astype(np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    best_s = np.empty((len(q), 0), np.float32)
    best_r = np.empty((len(q), 0), np.int64)
    for start in range(0, matrix.shape[0], chunk_rows):
        x = np.asarray(matrix[start:start + chunk_rows], dtype=np.float32)
        s = (q @ x.T) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        all_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        all_r = np.concatenate([best_r, part + start], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s, best_r = np.take_along_axis(all_s, order, axis=1), np.take_along_axis(all_r, order, axis=1)
    return best_s, best_r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--queries", default="1,16,256", help="comma-separated query counts, each searched at once")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="timed repeats of each (the median is reported)")
    ap.add_argument("--device", default="cpu", help="torch device of our search (the numpy peer runs on the CPU)")
    ap.add_argument("--path", default=None, help="where the matrix goes (default: /tmp/esimcse-search-ROWSxDIM-DTYPE.npy)")
    ap.add_argument("--keep", action="store_true", help="keep the matrix file (a rerun of the same shape reuses it)")
    ap.add_argument("--write-results", action="store_true", help="also write the 'search_speed' section of docs/RESULTS.md")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from esimcse_cli.core.search import chunk_rows_for, search

    counts = [int(c) for c in args.queries.split(",")]
    path = Path(args.path or f"/tmp/esimcse-search-{args.rows}x{args.dim}-{args.dtype}.npy")
    load_start = os.getloadavg()[0]  # the machine is shared: say how busy it was
    reused = path.exists() and np.load(path, mmap_mode="r").shape == (args.rows, args.dim)
    if not reused:
        t = time.perf_counter()
        write_matrix(path, args.rows, args.dim, args.dtype)
        print(f"wrote {path} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    try:
        matrix = np.load(path, mmap_mode="r")
        gb = matrix.nbytes / 1e9
        rng = np.random.default_rng(1)
        table, agree, self_hit = [], True, True
        for n_q in counts:
            picks = np.sort(rng.integers(0, args.rows, n_q))
            q = np.asarray(matrix[picks], dtype=np.float32)
            chunk = chunk_rows_for(args.dim, n_q)
            runs = {
                "search": lambda q=q: search(path, q, k=args.k, device=args.device),
                "numpy": lambda q=q, chunk=chunk: numpy_top_k(matrix, q, args.k, chunk),
            }
            times, out = {}, {}
            for name, run in runs.items():
                out[name] = run()  # the untimed first pass also reads the file into the page cache
                times[name] = []
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - t)
                print(f"  Q={n_q} {name}: {', '.join(f'{x:.3f}' for x in times[name])}s", file=sys.stderr)
            hits = out["search"]
            ours = np.array([h.row for h in hits]).reshape(n_q, -1)
            top = np.array([h.score for h in hits if h.rank == 1])
            self_hit = self_hit and bool((ours[:, 0] == picks).all() and np.allclose(top, 1.0, atol=1e-4))
            same = float(np.mean([set(a) == set(b) for a, b in zip(ours.tolist(), out["numpy"][1].tolist())]))
            agree = agree and same == 1.0
            med = {name: statistics.median(ts) for name, ts in times.items()}
            table.append((n_q, chunk, med["search"], med["numpy"], same))
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)

    md = [f"## Search: exact cosine top-{args.k} over {args.rows:,} x {args.dim} {args.dtype} ({gb:.2f} GB, memory-mapped)\n",
          f"`core.search.search` (what `esimcse search` runs once the queries are encoded) on device {args.device}, "
          f"{torch.get_num_threads()} torch thread(s), against the numpy peer: the same chunks scored with `@` and cut "
          "with `np.argpartition`, measured in the same run. Both read the matrix from the page cache (an untimed first "
          f"pass loaded it); the medians of {args.rounds} rounds. Query encoding is not included.\n",
          "| queries at once | rows per chunk | search s | search queries/s | numpy s | numpy queries/s | speed-up "
          "| same top-k |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n_q, chunk, ours, peer, same in table:
        md.append(f"| {n_q} | {chunk:,} | {ours:.3f} | {n_q / ours:,.1f} | {peer:.3f} | {n_q / peer:,.1f} | "
                  f"{peer / ours:.2f}x | {same:.0%} |")
    md.append(f"\nEach query's top hit is its own row with cosine 1: {'yes' if self_hit else 'NO'}. "
              f"Same top-{args.k} rows as numpy for every query: {'yes' if agree else 'NO'}.")
    load_end, cpus = os.getloadavg()[0], os.cpu_count() or 1
    busy = max(load_start, load_end) > cpus
    md.append(f"\nLoad average (1 min) {load_start:.2f} at the start, {load_end:.2f} at the end, on {cpus} CPUs"
              + (" (above the CPU count: other work shared them, and every time here is longer than on an idle machine)."
                 if busy else " (below the CPU count: nothing else heavy ran)."))
    publish("search_speed", "\n".join(md), args.write_results)
    return 0 if self_hit and agree else 1


if __name__ == "__main__":
    sys.exit(main())
