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

``--train`` measures `esimcse train` the same way (a fixed ``--steps`` per size, so only the corpus grows):

    python benchmarks/memory.py --train --model tiny --sizes 1000,10000        # smoke test
    python benchmarks/memory.py --train --model tiny --write-results           # 10k / 100k / 1M (section memory_train)
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

from _results import publish  # benchmarks/ is on sys.path when a script here runs

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


def run_measured(what: str, cmd: list, env: dict, on_line=None) -> dict:
    """Run ``cmd`` as a child: exact peak RSS (wait4), sampled peak anonymous/file RSS and wall time.

    Each stderr line goes to ``on_line(line, seconds_since_start)`` as it arrives; a thread drains the pipe,
    so that wait4 cannot block on a full one. A non-zero exit stops the benchmark with stderr's last lines.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    sampler = AnonSampler(proc.pid)
    sampler.start()
    lines: list = []

    def read() -> None:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            if on_line is not None:
                on_line(line, time.perf_counter() - t0)
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    reader.join()
    if returncode != 0:
        tail = "".join(lines).strip().splitlines()[-3:]
        raise SystemExit(f"{what} failed (exit {returncode}): {' / '.join(tail)}")
    return {"peak_rss": usage.ru_maxrss * 1024,  # Linux reports KiB
            "peak_anon": sampler.peak_anon, "peak_file": sampler.peak_file, "wall": wall}


def run_encode(src: Path, out: Path, model: str, batch_size: int, device: str) -> dict:
    cmd = [sys.executable, "-m", "esimcse_cli", "encode", str(src), "-o", str(out), "--model", model,
           "--batch-size", str(batch_size), "--device", device]
    res = run_measured("encode", cmd, {**os.environ, "HF_HUB_OFFLINE": "1"})
    return {**res, "output": out.stat().st_size}


def mib(n: float) -> str:
    x = n / 2**20
    return f"{x:,.0f} MiB" if x >= 100 else f"{x:.1f} MiB"


def run_train(src: Path, out: Path, model: str, batch_size: int, steps: int, device: str, spool_dir: Path) -> dict:
    """One `esimcse train` subprocess: peak RSS (wait4), sampled anonymous RSS, wall time and the time until
    training starts (the CLI's "corpus ...: N sentences" line: corpus spooled + model loaded)."""
    cmd = [sys.executable, "-m", "esimcse_cli", "train", str(src), "-o", str(out), "--model", model, "--batch-size", str(batch_size),
           "--max-steps", str(steps), "--save-steps", "0", "--eval-steps", "0", "--log-steps", "1", "--device", device]
    # the trainer spools the corpus into a temporary folder: keep it beside the generated files
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(spool_dir), "COLUMNS": "200"}
    ready: list = []

    def on_line(line: str, t: float) -> None:
        if not ready and " sentences (" in line and line.lstrip().startswith("corpus "):
            ready.append(t)

    res = run_measured("train", cmd, env, on_line)
    import json

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return {
        "peak_rss": res["peak_rss"],
        "peak_anon": res["peak_anon"],
        "wall": res["wall"],
        "ready": ready[0] if ready else float("nan"),
        "sentences": manifest["corpus"]["sentences"],
        "steps": manifest["steps"],
        "train_wall": manifest.get("wall_s"),
    }


def measure_train(args, sizes: list, model: str, label: str, work: Path) -> None:
    """Peak RSS of `esimcse train` on generated corpora of each size, a fixed number of steps each.

    Only the corpus size varies (same model, batch, steps), so the difference between sizes is what the
    trainer keeps per line: the corpus is spooled to a temporary file on disk and indexed by an 8-byte offset a
    line (1M lines = 8 MB, plus an 8 MB permutation for the epoch order). The check: peak RSS at the largest
    size <= 1.5 x peak RSS at the smallest.
    """
    rows = []
    for n in sizes:
        src = work / f"lines-{n}.txt"
        t0 = time.perf_counter()
        size = make_corpus(src, n)
        gen = time.perf_counter() - t0
        out = work / f"run-{n}"
        spool = work / f"spool-{n}"
        spool.mkdir()
        r = run_train(src, out, model, args.batch_size, args.steps, args.device, spool)
        r.update(lines=n, input=size)
        rows.append(r)
        print(f"{n:>9,} lines ({mib(size)} text, generated in {gen:.1f}s): peak RSS {mib(r['peak_rss'])}, "
              f"anon {mib(r['peak_anon'])}, ready after {r['ready']:.1f}s, {r['steps']} steps, {r['wall']:.1f}s in all", file=sys.stderr)
        leftovers = list(spool.iterdir())
        if leftovers:
            print(f"  warning: the trainer left {leftovers} in its temporary folder", file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(spool, ignore_errors=True)
        if not args.keep:
            src.unlink()

    base, top = rows[0], rows[-1]
    limit = 1.5 * base["peak_rss"]
    ok = top["peak_rss"] <= limit
    lines = [
        f"`esimcse train` on generated corpora (short sentences, 4-24 words), model: {label}, batch {args.batch_size}, "
        f"{args.steps} steps (`--max-steps {args.steps} --save-steps 0 --eval-steps 0`), {args.device}.",
        "",
        "| lines | corpus text | peak RSS | peak anonymous RSS (sampled) | spool + model load | whole run |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['lines']:,} | {mib(r['input'])} | {mib(r['peak_rss'])} | {mib(r['peak_anon'])} | "
                     f"{r['ready']:.1f} s | {r['wall']:.1f} s |")
    lines += [
        "",
        f"Check: peak RSS at {top['lines']:,} lines = {mib(top['peak_rss'])} <= 1.5 x {mib(base['peak_rss'])} "
        f"(at {base['lines']:,}) = {mib(limit)}: **{'PASS' if ok else 'FAIL'}**.",
        "",
        "Peak RSS is `ru_maxrss` of the train process (exact; it includes torch, the model and the optimizer, the same at "
        "every size). The corpus is read once, streamed into a spool file on disk with an 8-byte offset per kept line "
        "(1M lines: 8 MB of offsets and an 8 MB epoch permutation); batches are read back by seeking. 'spool + model load' "
        "is the time until the first step can run (the CLI's `corpus ...: N sentences` line); the steps themselves cost "
        "the same at every size, so the rest of the difference in the whole run is reading and hashing the corpus.",
    ]
    md = "## Peak memory of train\n" + "\n".join(lines)
    publish("memory_train", md, args.write_results)
    sys.exit(0 if ok else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="Comma-separated line counts (default 10000,100000,1000000).")
    ap.add_argument("--model", default="default", help="'default', a model folder, or 'tiny' (a random 2-layer BERT built on the fly).")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tmpdir", default=None, help="Where the generated files go (default: the system temp folder).")
    ap.add_argument("--keep", action="store_true", help="Keep the generated files.")
    ap.add_argument("--write-results", action="store_true", help="Replace the 'memory' section of docs/RESULTS.md.")
    ap.add_argument("--train", action="store_true", help="Measure `esimcse train` instead of encode (section memory_train).")
    ap.add_argument("--steps", type=int, default=5, help="--train: optimizer steps per run (default 5).")
    args = ap.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    if not sizes or sizes[0] <= 0:
        raise SystemExit("--sizes: give positive line counts")
    if args.train and (args.steps < 1 or args.batch_size < 2 or sizes[0] < args.batch_size):
        raise SystemExit("--train: needs --steps >= 1, --batch-size >= 2 and every size >= the batch size")

    work = Path(tempfile.mkdtemp(prefix="esimcse-memory-", dir=args.tmpdir))
    try:
        model = str(tiny_model(work)) if args.model == "tiny" else args.model
        label = "tiny random BERT (hidden 32)" if args.model == "tiny" else args.model
        if args.train:
            measure_train(args, sizes, model, label, work)
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
    publish("memory", md, args.write_results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
