"""Peak memory of `esimcse encode` as the input grows: 10k, 100k and 1M lines.

    python benchmarks/memory.py                                  # default model, 10k / 100k / 1M lines
    python benchmarks/memory.py --model tiny --sizes 1000,10000  # smoke test (a random 2-layer BERT, seconds)
    python benchmarks/memory.py --write-results                  # also replace the "memory" section of docs/RESULTS.md

Each size gets a generated text file (short sentences from a seeded word list, in a temporary folder, never
in the repository) and one `python -m esimcse_cli encode FILE -o OUT.npy` subprocess. Peak RSS is the kernel's
own figure for that one process (``ru_maxrss`` from ``os.wait4``), so nothing is missed between samples.

RSS counts the resident pages of the memory-mapped output ``.npy`` too (file-backed pages: up to the whole
array once it is written). So the table shows the output size next to the peak, and a sampled peak of the
anonymous memory alone (``RssAnon`` from /proc, every 50 ms) that leaves those pages out.

The check (issue 5): peak RSS of the largest run <= 1.5 x peak RSS of the smallest run + the largest output array.

``--train`` is a stub for the train round: it will measure `esimcse train` the same way.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORDS = (
    "the a an of to and in is was it for on with as by at from that this be are were has have had not but or "
    "man woman child dog cat car house city river road tree bird horse ball game team year day night time world "
    "people water food music film book song small large big new old good bad first last long short high low red "
    "blue green black white he she they we runs run ran walks plays played eats sits reads writes sings said "
    "makes takes goes went comes sees looks quickly slowly happily together again always never often here there"
).split()


def make_corpus(path: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` short sentences (4-24 words), one per line; returns the file size in bytes."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        buf = []
        for i in range(n):
            k = rng.randint(4, 24)
            buf.append(" ".join(rng.choices(WORDS, k=k)) + " .")
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            f.write("\n".join(buf) + "\n")
    return path.stat().st_size


def tiny_model(folder: Path) -> Path:
    """The test suite's random 2-layer BERT (hidden 32): makes the 1M-line run quick."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from conftest import build_tiny_bert
    finally:
        sys.path.pop(0)
    return build_tiny_bert(folder / "tiny-bert")


class AnonSampler(threading.Thread):
    """Peak RssAnon / RssFile of one process from /proc (Linux), sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.interval = interval
        self.peak_anon = 0
        self.peak_file = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                fields = dict(line.split(":", 1) for line in self.status.read_text().splitlines() if ":" in line)
            except (OSError, ValueError):
                return
            anon = int(fields.get("RssAnon", "0 kB").split()[0]) * 1024
            file_ = int(fields.get("RssFile", "0 kB").split()[0]) * 1024
            self.peak_anon = max(self.peak_anon, anon)
            self.peak_file = max(self.peak_file, file_)
            self.stop.wait(self.interval)


def run_encode(src: Path, out: Path, model: str, batch_size: int, device: str) -> dict:
    cmd = [sys.executable, "-m", "esimcse_cli", "encode", str(src), "-o", str(out), "--model", model,
           "--batch-size", str(batch_size), "--device", device]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    sampler = AnonSampler(proc.pid)
    sampler.start()
    # the stderr pipe is drained by a thread so that wait4 below cannot block on a full pipe
    err_chunks: list = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    reader.join()
    if proc.returncode != 0:
        tail = b"".join(err_chunks).decode("utf-8", "replace").strip().splitlines()[-3:]
        raise SystemExit(f"encode failed (exit {proc.returncode}): {' / '.join(tail)}")
    return {
        "peak_rss": usage.ru_maxrss * 1024,  # Linux reports KiB
        "peak_anon": sampler.peak_anon,
        "peak_file": sampler.peak_file,
        "output": out.stat().st_size,
        "wall": wall,
    }


def mib(n: float) -> str:
    x = n / 2**20
    return f"{x:,.0f} MiB" if x >= 100 else f"{x:.1f} MiB"


def measure_train(args) -> None:
    """Stub for the train round: peak RSS of `esimcse train` on 10k / 100k / 1M-line corpora.

    Plan: the same generated corpora; `python -m esimcse_cli train FILE -o OUT --model M --max-steps S
    --batch-size B --save-steps 0` per size, with a fixed number of steps so that only the corpus size varies;
    peak RSS from os.wait4; the check: 1M peak <= 1.5 x 10k peak (training holds no per-line state beyond the
    tokenised corpus, which must be streamed or memory-mapped for this to hold).
    """
    raise SystemExit("--train: not implemented yet (filled in by the train round); see measure_train's docstring")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="Comma-separated line counts (default 10000,100000,1000000).")
    ap.add_argument("--model", default="default", help="'default', a model folder, or 'tiny' (a random 2-layer BERT built on the fly).")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tmpdir", default=None, help="Where the generated files go (default: the system temp folder).")
    ap.add_argument("--keep", action="store_true", help="Keep the generated files.")
    ap.add_argument("--write-results", action="store_true", help="Replace the 'memory' section of docs/RESULTS.md.")
    ap.add_argument("--train", action="store_true", help="Measure `esimcse train` instead (stub; filled in by the train round).")
    args = ap.parse_args()
    if args.train:
        measure_train(args)
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    if not sizes or sizes[0] <= 0:
        raise SystemExit("--sizes: give positive line counts")

    work = Path(tempfile.mkdtemp(prefix="esimcse-memory-", dir=args.tmpdir))
    try:
        model = str(tiny_model(work)) if args.model == "tiny" else args.model
        label = "tiny random BERT (hidden 32)" if args.model == "tiny" else args.model
        rows = []
        for n in sizes:
            src = work / f"lines-{n}.txt"
            t0 = time.perf_counter()
            size = make_corpus(src, n)
            gen = time.perf_counter() - t0
            out = work / f"out-{n}.npy"
            r = run_encode(src, out, model, args.batch_size, args.device)
            r.update(lines=n, input=size)
            rows.append(r)
            print(f"{n:>9,} lines ({mib(size)} text, generated in {gen:.1f}s): peak RSS {mib(r['peak_rss'])}, "
                  f"anon {mib(r['peak_anon'])}, output {mib(r['output'])}, {r['wall']:.1f}s", file=sys.stderr)
            out.unlink()
            if not args.keep:
                src.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"files kept in {work}", file=sys.stderr)

    base, top = rows[0], rows[-1]
    limit = 1.5 * base["peak_rss"] + top["output"]
    ok = top["peak_rss"] <= limit
    lines = [
        f"`esimcse encode` of generated text files, model: {label}, batch {args.batch_size}, {args.device}.",
        "",
        "| lines | input text | output .npy | peak RSS | peak RSS − output | peak anonymous RSS (sampled) | wall |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['lines']:,} | {mib(r['input'])} | {mib(r['output'])} | {mib(r['peak_rss'])} | "
            f"{mib(max(0, r['peak_rss'] - r['output']))} | {mib(r['peak_anon'])} | {r['wall']:.1f} s |"
        )
    lines += [
        "",
        f"Check: peak RSS at {top['lines']:,} lines = {mib(top['peak_rss'])} <= 1.5 x {mib(base['peak_rss'])} "
        f"(at {base['lines']:,}) + {mib(top['output'])} (output) = {mib(limit)}: **{'PASS' if ok else 'FAIL'}**.",
        "",
        "Peak RSS is `ru_maxrss` of the encode process (exact). It includes the resident pages of the memory-mapped "
        "output file, so the output size is shown beside it; the anonymous RSS column (sampled from /proc every "
        "50 ms) leaves those file-backed pages out.",
    ]
    md = "## Peak memory\n" + "\n".join(lines)
    print(md)
    if args.write_results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import update_section

        update_section("memory", md)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
