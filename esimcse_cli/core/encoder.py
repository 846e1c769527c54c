"""``SentenceEncoder``: texts in, float32 sentence vectors out, in input order.

How it is fast without being clever:

* the whole list (or chunk) is tokenised once, in one call to the fast tokenizer, without padding;
* sentences are sorted by their real token length (not by characters), so each batch pads to almost
  nothing; a batch whose sentences all have the same length is run without an attention mask;
* a batch is a budget of padded tokens (``batch_size`` sentences of 64 tokens), not a fixed count of
  sentences: short sentences go in larger batches, long ones in smaller ones (:func:`length_batches`);
* everything runs under :func:`torch.inference_mode`, and vectors are written straight into the output
  array (a numpy memmap for large inputs), so memory stays bounded by one chunk.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from esimcse_cli.core.padding import pad_ids
from esimcse_cli.core.pooling import needs_hidden_states, pool

log = logging.getLogger("esimcse")

Progress = Callable[[int], None]


class SentenceEncoder:
    """Wrap any transformers encoder with a pooling and a max length."""

    def __init__(self, tokenizer, model, pooling: str, max_length: int, device: str | torch.device | None = None, name: str = ""):
        self.tokenizer = tokenizer
        self.model = model
        self.pooling = pooling
        self.max_length = int(max_length)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.name = name
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def backend(self) -> str:
        """What runs the forward: ``torch`` here, ``onnx`` / ``onnx int8`` in :class:`~esimcse_cli.core.onnx_encoder.OnnxEncoder`."""
        return "torch"

    # -- tokenisation ---------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, truncated to ``max_length``, unpadded."""
        if not texts:
            return []
        try:
            enc = self.tokenizer(
                list(texts),
                add_special_tokens=True,
                truncation=True,
                max_length=self.max_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            return enc["input_ids"]
        except Exception as exc:  # a tokenizer that cannot take these texts: the model's problem, told in one line
            from esimcse_cli.core.errors import ModelLoadError, first_line

            first = first_line(exc)
            raise ModelLoadError(f"{self.name or 'model'}: the tokenizer failed: {type(exc).__name__}{': ' + first if first else ''}") from exc

    def pad(self, batch_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Right-pad to the longest sequence; the mask is ``None`` when nothing needed padding."""
        return pad_ids(batch_ids, self.pad_id)

    # -- forward ------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Forward + pool. Gradients follow the caller's mode (training wraps this with grad on)."""
        input_ids = input_ids.to(self.device, non_blocking=True)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device, non_blocking=True)
        hidden = needs_hidden_states(self.pooling)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden, return_dict=True)
        return pool(
            self.pooling,
            out.last_hidden_state,
            attention_mask,
            hidden_states=out.hidden_states if hidden else None,
            pooler_output=getattr(out, "pooler_output", None),
        )

    # -- encoding -----------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        normalize: bool = True,
        progress: Progress | None = None,
        out: np.ndarray | None = None,
        shard: tuple[int, int] | None = None,
        truncate_dim: int | None = None,
    ) -> np.ndarray:
        """Encode ``texts`` into an (N, dim) float32 array (or into ``out``), rows in input order.

        ``shard=(rank, world)`` encodes only every ``world``-th batch from the ``rank``-th (the others' rows are
        left as they are): the batches are those of the whole call, so that the ranks of a torchrun together
        compute exactly the rows one process would (:mod:`esimcse_cli.core.embed`). ``truncate_dim``: keep the first
        dimensions, before the normalisation (``--truncate-dim``).
        """
        n = len(texts)
        if out is None:
            out = np.empty((n, truncate_dim or self.dim), dtype=np.float32)
        if n == 0:
            return out
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        with self.inference():
            for j, idx in enumerate(length_batches(lengths, batch_size)):
                if shard is not None and j % shard[1] != shard[0]:
                    continue
                input_ids, mask = self.pad([ids[i] for i in idx])
                vec = self.embed(input_ids, mask).float()
                if truncate_dim is not None:
                    vec = vec[:, :truncate_dim]
                if normalize:
                    vec = torch.nn.functional.normalize(vec, p=2, dim=-1)
                out[idx] = vec.cpu().numpy()
                if progress is not None:
                    progress(len(idx))
        return out

    @contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode and :func:`torch.inference_mode` for the block; the model's mode is given back after it."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            if was_training:
                self.model.train()

    def encode_stream(
        self,
        texts: Iterable[str],
        out: np.ndarray,
        batch_size: int = 64,
        normalize: bool = True,
        chunk_size: int = 16384,
        progress: Progress | None = None,
        shard: tuple[int, int] | None = None,
        truncate_dim: int | None = None,
    ) -> int:
        """Encode an iterable of texts into ``out`` chunk by chunk; memory is bounded by one chunk.

        Sorting by length happens within each chunk. Returns the number of rows written.
        """
        row = 0
        for chunk in _chunks(texts, chunk_size):
            if row + len(chunk) > len(out):
                raise ValueError("more texts than rows in the output array")
            self.encode(chunk, batch_size=batch_size, normalize=normalize, progress=progress, out=_RowView(out, row), shard=shard,
                        truncate_dim=truncate_dim)
            row += len(chunk)
        return row


TOKENS_PER_SENTENCE = 64


def length_batches(lengths: np.ndarray, batch_size: int, tokens_per_sentence: int = TOKENS_PER_SENTENCE) -> Iterator[np.ndarray]:
    """Index batches, longest sentences first, each within a budget of padded tokens.

    The budget is ``batch_size * tokens_per_sentence`` padded tokens (``batch_size`` sentences of 64 tokens),
    and a batch never holds fewer than one sentence. Sorted by length, a batch pads to almost nothing; short
    sentences ride in larger batches and long ones in smaller ones, so every forward pass multiplies matrices
    of about the same height, and memory is bounded by the budget rather than by the longest sentence.
    On a 2-core CPU this is markedly faster than a fixed count of sentences per batch (see docs/RESULTS.md).
    """
    order = np.argsort(-lengths, kind="stable")
    budget = max(1, int(batch_size)) * tokens_per_sentence
    start = 0
    n = len(order)
    while start < n:
        width = max(1, int(lengths[order[start]]))  # the longest in the batch: it is the first
        size = max(1, budget // width)
        yield order[start : start + size]
        start += size


class _RowView:
    """Lets ``encode`` write fancy-indexed rows into a slice of a (memmapped) array."""

    def __init__(self, array: np.ndarray, offset: int):
        self.array = array
        self.offset = offset

    def __setitem__(self, idx, value) -> None:
        self.array[np.asarray(idx) + self.offset] = value


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
