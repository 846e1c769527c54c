"""The sentence-transformers side of encode_speed.py, run by the Python of a separate virtual environment.

    python _st_onnx_worker.py CORPUS N THREADS MODEL_DIR OURS_DIR WORK_DIR

sentence-transformers' ONNX backend needs optimum-onnx, which pins transformers below 5, so it cannot live in
the project's environment: encode_speed.py builds a venv with ``sentence-transformers[onnx]`` and drives this
script over stdin/stdout, one JSON object a line, so that its encoders alternate with esimcse's in one run:

    {"run": NAME, "start": i, "end": j}  -> {"seconds": s}     encode lines[i:j] with encoder NAME, timed here
    {"rows": NAME, "path": P}            -> {"path": P}        all N rows of NAME as a float32 .npy at P
    {"quit": true}

Encoders: ``st-onnx`` (sentence-transformers' own export of MODEL_DIR, ``backend="onnx"``), ``st-onnx-int8`` (its
``export_dynamic_quantized_onnx_model(model, "avx2", ...)``, the file ``onnx/model_quint8_avx2.onnx``), and
``ours-fp32`` / ``ours-int8`` / ``ours-st-int8`` (``onnx/model.onnx``, ``model_qint8_avx2.onnx`` and
``model_quint8_avx2.onnx`` of the folder ``esimcse export-onnx --quantize int8`` wrote, loaded by
sentence-transformers: only their rows are used). Every session runs THREADS intra-op threads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def main() -> None:
    corpus, n, threads, model_dir, ours_dir, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:7]
    import numpy as np
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    torch.set_num_threads(threads)
    lines = [line.strip() for line in Path(corpus).read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    copy = Path(work) / "st-model"  # sentence-transformers exports into a copy, never into site-packages
    if not copy.exists():
        shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("onnx"))

    def options():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return so

    def load(path, file_name=None, export=False):
        kwargs = {"session_options": options(), "provider": "CPUExecutionProvider"}
        if file_name:
            kwargs["file_name"] = file_name
        if export:
            kwargs["export"] = True
        return SentenceTransformer(str(path), backend="onnx", device="cpu", model_kwargs=kwargs)

    st = load(copy, export=True)
    st.save_pretrained(str(copy))  # writes onnx/model.onnx, as its docs show
    export_dynamic_quantized_onnx_model(st, "avx2", str(copy))
    encoders = {
        "st-onnx": load(copy, "onnx/model.onnx"),
        "st-onnx-int8": load(copy, "onnx/model_quint8_avx2.onnx"),
        "ours-fp32": load(ours_dir, "onnx/model.onnx"),
        "ours-int8": load(ours_dir, "onnx/model_qint8_avx2.onnx"),
        "ours-st-int8": load(ours_dir, "onnx/model_quint8_avx2.onnx"),
    }
    for model in encoders.values():
        model.max_seq_length = 256

    def encode(name, texts):
        return encoders[name].encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)

    for name in ("st-onnx", "st-onnx-int8"):
        encode(name, lines[:200])  # warm-up
    print(json.dumps({"ready": True, "versions": {"sentence_transformers": __import__("sentence_transformers").__version__,
                                                  "transformers": __import__("transformers").__version__,
                                                  "onnxruntime": ort.__version__, "optimum": _version("optimum-onnx")}}),
          flush=True)
    for raw in sys.stdin:
        msg = json.loads(raw)
        if msg.get("quit"):
            break
        if "run" in msg:
            t0 = time.perf_counter()
            encode(msg["run"], lines[msg["start"]:msg["end"]])
            print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
        elif "rows" in msg:
            np.save(msg["path"], encode(msg["rows"], lines).astype(np.float32))
            print(json.dumps({"path": msg["path"]}), flush=True)


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "?"


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
