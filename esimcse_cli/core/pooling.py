"""SimCSE's poolers: how token states become one sentence vector.

=====================  ======================================================================
``cls``                the model's pooler output (BERT: dense + tanh over [CLS]); SimCSE's ``cls``
``cls_before_pooler``  the raw last-layer [CLS] state (what unsupervised SimCSE/ESimCSE test with)
``avg``                mean of last-layer states over real tokens (sentence-transformers' mean pooling)
``avg_first_last``     mean over tokens of (first layer + last layer) / 2
``avg_top2``           mean over tokens of (last layer + second-to-last layer) / 2
=====================  ======================================================================

"First layer" is ``hidden_states[1]``, the output of the first transformer layer, as in SimCSE's
current code (``hidden_states[0]`` is the embedding layer).

Training takes the same names (``--pooler``), with one difference: training's ``cls`` is the raw [CLS]
state followed by a training-only MLP (:mod:`esimcse_cli.core.contrastive`), so it pools, and exports,
as ``cls_before_pooler`` (:func:`hidden_pooling`).

Nothing here calls torch (the functions only use tensor methods), so the configuration and the CLI read
these names without importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

POOLINGS = ("cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2")


def hidden_pooling(pooler: str) -> str:
    """The :func:`pool` method behind a training pooler name (``cls`` -> raw [CLS])."""
    return "cls_before_pooler" if pooler == "cls" else pooler


def needs_hidden_states(method: str) -> bool:
    return method in ("avg_first_last", "avg_top2")


def masked_mean(states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return states.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def pool(
    method: str,
    last_hidden_state: torch.Tensor,
    attention_mask: torch.Tensor | None,
    hidden_states: tuple[torch.Tensor, ...] | None = None,
    pooler_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool token states (batch, seq, dim) into sentence vectors (batch, dim)."""
    if method == "cls_before_pooler":
        return last_hidden_state[:, 0]
    if method == "cls":
        if pooler_output is None:
            raise ValueError("pooling 'cls' needs the model's pooler output; this model has no pooler (use cls_before_pooler)")
        return pooler_output
    if method == "avg":
        return masked_mean(last_hidden_state, attention_mask)
    if method in ("avg_first_last", "avg_top2"):
        if hidden_states is None:
            raise ValueError(f"pooling '{method}' needs hidden states (output_hidden_states=True)")
        first, second = (hidden_states[1], hidden_states[-1]) if method == "avg_first_last" else (hidden_states[-1], hidden_states[-2])
        return masked_mean((first + second) / 2.0, attention_mask)
    raise ValueError(f"unknown pooling '{method}' (choose from {', '.join(POOLINGS)})")
