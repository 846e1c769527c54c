"""encode across processes: one process against torchrun's two, 1 thread each, the same input; the arrays must be identical.

    python benchmarks/encode_torchrun.py --write-results          # 2,000 wiki1m sentences
    python benchmarks/encode_torchrun.py --n 200                  # smoke test

Both are whole commands (``python -m esimcse_cli encode`` and ``python -m torch.distributed.run --standalone
--nproc_per_node 2 -m esimcse_cli encode``) with OMP_NUM_THREADS=1 and TOKENIZERS_PARALLELISM=false, so the wall
time includes starting Python, loading the model and (for torchrun) the process group; it is reported beside
the encoding alone, which ``--n`` makes dominant. Runs alternate, ``--rounds`` each; the median is shown.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import publish

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus" / "wiki1m_for_simcse.random10k_seed42.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backend", default="torch", help="torch | onnx (encode's --backend)")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="encode-torchrun-"))
    source = work / "in.txt"
    lines = [l.strip() for l in args.corpus.read_text(encoding="utf-8").splitlines() if l.strip()][: args.n]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    tail = ["-m", "esimcse_cli", "encode", str(source), "--backend", args.backend]
    commands = {
        "1 process": [sys.executable, *tail],
        "torchrun, 2 processes": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *tail],
    }
    empty = work / "empty.txt"
    empty.write_text("x\n", encoding="utf-8")
    startup = {}
    for name, cmd in commands.items():  # the fixed cost: the same command on one line (also warms the page cache)
        startup[name] = run(cmd[:-3] + [str(empty)] + cmd[-2:], work / "s.npy", env)
    times = {name: [] for name in commands}
    for r in range(args.rounds):
        for name in (list(commands) if r % 2 == 0 else list(commands)[::-1]):
            times[name].append(run(commands[name], work / f"{name[0]}.npy", env))
    same = filecmp.cmp(work / "1.npy", work / "t.npy", shallow=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    enc = {k: med[k] - startup[k] for k in med}
    md = [
        "## encode across processes (torchrun)\n",
        f"{len(lines)} wiki1m sentences, bundled all-MiniLM-L6-v2, `--backend {args.backend}`, 1 thread per process "
        f"(OMP_NUM_THREADS=1), {args.rounds} alternating rounds (median).\n",
        "| run | wall s | of which start-up (1-line input) | encoding s | sentences/s (encoding) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in commands:
        md.append(f"| {name} | {med[name]:.1f} | {startup[name]:.1f} | {enc[name]:.1f} | {len(lines) / enc[name]:.0f} |")
    md += [
        "",
        f"- **Speed-up of 2 processes: {med['1 process'] / med['torchrun, 2 processes']:.2f}x wall, "
        f"{enc['1 process'] / enc['torchrun, 2 processes']:.2f}x encoding** (2 cores here).",
        f"- The two arrays are {'byte-identical' if same else 'DIFFERENT'} (`filecmp.cmp(shallow=False)`).",
    ]
    publish("encode_torchrun", "\n".join(md), args.write_results)
    sys.exit(0 if same else 1)


def run(cmd: list, out: Path, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + ["-o", str(out)], env=env, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


if __name__ == "__main__":
    main()
