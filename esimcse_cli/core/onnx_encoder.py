"""``OnnxEncoder``: :class:`~esimcse_cli.core.encoder.SentenceEncoder` with its forward in ONNX Runtime.

    load_encoder(..., backend="onnx", quantize=...) -> onnx_export.onnx_file (export once) -> an ORT session

Only the forward changes: the tokenisation, the length-sorted token-budget batches, the pooling, the
normalisation and the output are the torch encoder's own. The session runs on the CPU with as many
intra-op threads as torch uses (``torch.get_num_threads()``: ``OMP_NUM_THREADS``, or the physical cores),
sequentially, with every graph optimisation ONNX Runtime has (``ORT_ENABLE_ALL``: its LayerNorm, GELU and
MatMul fusions), so ``--threads``-style settings mean the same on both backends.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from esimcse_cli.core.encoder import SentenceEncoder
from esimcse_cli.core.errors import ModelLoadError, first_line
from esimcse_cli.core.onnx_export import INPUTS as FEEDS  # what embed() can feed
from esimcse_cli.core.pooling import pool


class OnnxEncoder(SentenceEncoder):
    """A SentenceEncoder whose ``embed`` runs an ONNX Runtime session instead of the torch module."""

    def __init__(self, tokenizer, path: str | Path, pooling: str, max_length: int, name: str = "", quantize: str = "none",
                 threads: int | None = None):
        self.session = open_session(path, threads)
        self.path = Path(path)
        self.quantize = quantize
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if "input_ids" not in self.input_names or "last_hidden_state" not in self.output_names:
            raise ModelLoadError(f"{path}: not a sentence-embedding ONNX model (inputs {', '.join(self.input_names)}; "
                                 f"outputs {', '.join(self.output_names)}; expected input_ids in, last_hidden_state out)")
        if pooling == "cls" and "pooler_output" not in self.output_names:
            raise ModelLoadError(f"{path}: pooling 'cls' needs the output pooler_output, which this ONNX model lacks; use cls_before_pooler")
        unknown = [name for name in self.input_names if name not in FEEDS]
        if unknown:
            raise ModelLoadError(f"{path}: takes inputs esimcse does not feed ({', '.join(unknown)}; it feeds {', '.join(FEEDS)})")
        shape = self.session.get_outputs()[self.output_names.index("last_hidden_state")].shape
        self._dim = shape[-1] if isinstance(shape[-1], int) else None
        super().__init__(tokenizer, None, pooling, max_length, device="cpu", name=name)
        self._wanted = ["last_hidden_state"] + (["pooler_output"] if pooling == "cls" else [])

    @property
    def dim(self) -> int:
        if self._dim is None:  # an export whose hidden size is symbolic: run one token to learn it
            self._dim = int(self.embed(torch.tensor([[self.pad_id]]), None).shape[-1])
        return self._dim

    @property
    def backend(self) -> str:
        return "onnx int8" if self.quantize == "int8" else "onnx"

    @contextmanager
    def inference(self) -> Iterator[None]:
        with torch.inference_mode():
            yield

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        ids = input_ids.numpy().astype(np.int64, copy=False)
        mask = np.ones_like(ids) if attention_mask is None else attention_mask.numpy().astype(np.int64, copy=False)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        outs = dict(zip(self._wanted, self.session.run(self._wanted, feeds)))
        return pool(self.pooling, torch.from_numpy(outs["last_hidden_state"]), attention_mask,
                    pooler_output=torch.from_numpy(outs["pooler_output"]) if "pooler_output" in outs else None)


def open_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session over ``path``; a file ONNX Runtime cannot read is one line naming it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable ONNX model ({first_line(exc, type(exc).__name__)}); delete it to export "
                             "it again") from None
