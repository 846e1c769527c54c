"""What compact embeddings cost: STS-B test Spearman for every --precision, at several --truncate-dim.

    python benchmarks/precision_accuracy.py --write-results      # ../shared/data, the bundled model

The STS-B test sentences are encoded once (float32, unnormalised), then for each truncation kept in its first
D dimensions and L2-normalised (``encode --truncate-dim D``), and stored at each precision exactly as
``encode --precision`` stores them (:mod:`esimcse_cli.core.precision`; int8/uint8 calibrated on these rows
themselves). A pair's similarity is what ``search`` scores: the cosine of the rows as stored (int8/uint8: their
buckets' middles), and for binary the Hamming similarity ``1 - 2 h / D``. Also the bytes a row takes.
The peer is float32 at the full dimension, in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _results import publish

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", default="default")
    ap.add_argument("--dims", default="384,256,128,64")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()

    import numpy as np

    from esimcse_cli.core import evaluate, precision as compact
    from esimcse_cli.core.models import load_encoder

    tasks = evaluate.load_given_tasks(str(args.data), None, "stsb", "test", None, None, "auto")
    pairs = next(iter(tasks.values()))
    sentences = evaluate.unique_sentences(tasks)
    index = {s: i for i, s in enumerate(sentences)}
    ia = np.array([index[p.a] for p in pairs])
    ib = np.array([index[p.b] for p in pairs])
    gold = np.array([p.score for p in pairs])
    enc = load_encoder(args.model, device="cpu")
    raw = enc.encode(sentences, normalize=False)
    dims = [int(d) for d in args.dims.split(",") if int(d) <= raw.shape[1]]

    def similarity(stored, precision, ranges, dim):
        if precision in compact.BINARY:
            x = compact.dequantize(stored, precision, None, dim)  # +-1 a bit: a . b = dim - 2 h (h: the Hamming distance)
            return np.einsum("ij,ij->i", x[ia], x[ib]) / dim
        x = compact.dequantize(stored, precision, ranges, dim)
        return evaluate.cosine_rows(x, ia, ib)

    table = {}
    for dim in dims:
        rows = raw[:, :dim] / np.linalg.norm(raw[:, :dim], axis=1, keepdims=True).clip(1e-12)
        for precision in compact.PRECISIONS:
            ranges = compact.calibrate(rows) if precision in compact.CALIBRATED else None
            stored = compact.quantize(rows, precision, ranges)
            table[(dim, precision)] = (evaluate.spearman100(similarity(stored, precision, ranges, dim), gold), stored.nbytes // len(stored))
    full = table[(dims[0], "float32")][0]
    md = [
        "## Compact embeddings: STS-B test per precision\n",
        f"STS-B test ({len(pairs)} pairs, {len(sentences)} distinct sentences), model {enc.name}, {enc.pooling} pooling; "
        "Spearman x100 of the similarity `search` scores for each stored form (see the script's docstring), and "
        "bytes per row.\n",
        "| precision | " + " | ".join(f"dim {d}" for d in dims) + " |",
        "| --- | " + " | ".join("---:" for _ in dims) + " |",
    ]
    for precision in compact.PRECISIONS:
        cells = [f"{table[(d, precision)][0]:.2f} ({table[(d, precision)][1]} B)" for d in dims]
        md.append(f"| {precision} | " + " | ".join(cells) + " |")
    worst = min(v[0] for (d, p), v in table.items() if d == dims[0] and p in ("int8", "uint8"))
    md += ["", f"- Peer: float32 at dim {dims[0]}, {full:.2f}. int8/uint8 at dim {dims[0]}: within "
           f"{full - worst:.2f}; binary at dim {dims[0]}: {table[(dims[0], 'binary')][0] - full:+.2f} at 1/32 of the bytes."]
    publish("precision_accuracy", "\n".join(md), args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
