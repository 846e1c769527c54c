"""Is ONNX Runtime's offline BERT fusion worth a step? esimcse's ONNX files against their fused form, alternating.

    python benchmarks/onnx_fusion.py --write-results        # 2,000 wiki1m sentences, 2 rounds

`--backend onnx` runs `onnx/model.onnx` as exported, with the session's own graph optimisations
(ORT_ENABLE_ALL). ONNX Runtime also has an offline optimizer for BERT-like graphs
(`onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`) that fuses the attention into one
`Attention` op, the embeddings and their LayerNorm into `EmbedLayerNormalization`, and the residual adds into
`SkipLayerNormalization`, with `BiasGelu`. This measures both forms, fp32 and int8 (esimcse's int8 scheme applied to
each), through the same OnnxEncoder, so only the graph differs. esimcse adopts the fused form only if it is faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import publish

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus" / "wiki1m_for_simcse.random10k_seed42.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--slice", type=int, default=500)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    from esimcse_cli.core.models import load_backbone
    from esimcse_cli.core.onnx_encoder import OnnxEncoder
    from esimcse_cli.core.onnx_export import INT8_FILE, export_model, quantize_int8

    lines = [l.strip() for l in args.corpus.read_text(encoding="utf-8").splitlines() if l.strip()][: args.n]
    work = Path(tempfile.mkdtemp(prefix="onnx-fusion-"))
    bb = load_backbone("default")
    plain = export_model(bb.model, work / "plain.onnx")
    cfg = bb.model.config
    fused_model = optimize_model(str(plain), model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size)
    fusions = {k: v for k, v in fused_model.get_fused_operator_statistics().items() if v}
    fused = work / "fused.onnx"
    fused_model.save_model_to_file(str(fused))
    files = {"exported (session fusions only)": plain, "offline BERT fusion": fused}
    notes = []
    for name, path in list(files.items()):
        target = work / f"{path.stem}-int8.onnx"
        try:
            if path == fused:  # the fused ops are of another domain: shape inference cannot type their outputs
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                                 op_types_to_quantize=["MatMul", "Attention"],
                                 extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
            else:
                quantize_int8(path, target, INT8_FILE)
            files[f"{name}, int8"] = target
        except Exception as exc:  # noqa: BLE001 - reported in the table's notes
            notes.append(f"{name}, int8: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    encoders = {name: OnnxEncoder(bb.tokenizer, path, bb.pooling, bb.max_length) for name, path in files.items()}
    rows = {name: enc.encode(lines) for name, enc in encoders.items()}  # also the warm-up
    names = list(encoders)
    times = {n: [] for n in names}
    for r in range(args.rounds):
        total = dict.fromkeys(names, 0.0)
        for i, start in enumerate(range(0, len(lines), args.slice)):
            part = lines[start : start + args.slice]
            k = (i + r) % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                encoders[name].encode(part)
                total[name] += time.perf_counter() - t0
        for n in names:
            times[n].append(total[n])
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = rows["exported (session fusions only)"]
    md = [
        "## ONNX graph fusion\n",
        f"{len(lines)} wiki1m sentences, bundled all-MiniLM-L6-v2 through `OnnxEncoder` (the batching of `--backend onnx`), "
        f"{encoders[names[0]].session.get_session_options().intra_op_num_threads} thread(s), {args.rounds} rounds alternating "
        f"every {args.slice} sentences. Offline fusions applied: {', '.join(f'{k} {v}' for k, v in fusions.items())}.\n",
        "| graph | sentences/s | vs exported | mean cosine vs exported fp32 |",
        "| --- | ---: | ---: | ---: |",
    ]
    base = {False: med["exported (session fusions only)"], True: med.get("exported (session fusions only), int8")}
    for name in names:
        cos = (rows[name].astype(np.float64) * ref).sum(1).mean()
        b = base[name.endswith("int8")]
        md.append(f"| {name} | {len(lines) / med[name]:.0f} | {b / med[name]:.2f}x | {cos:.6f} |" if b else
                  f"| {name} | {len(lines) / med[name]:.0f} | - | {cos:.6f} |")
    md += [f"- {n}" for n in notes]
    publish("onnx_fusion", "\n".join(md), args.write_results)


if __name__ == "__main__":
    sys.exit(main())
