"""The momentum encoder and the queue of negatives (ESimCSE's "momentum contrast").

MomentumEncoder
    A deep copy of the online backbone made at the start of training, with ``requires_grad``
    off and dropout off (it stays in eval mode whatever ``.train()`` is called with). Its
    parameters follow the online ones by an exponential moving average,
    ``θm ← m·θm + (1 − m)·θ``, in :meth:`MomentumEncoder.update`.

    ``variant="paper"`` (default): the momentum encoder has its own EMA copy of the training MLP,
    and the trainer calls ``update`` once after each optimizer step (not per micro-batch).

    ``variant="official"`` (the released code, caskcsg/sentemb ``ESimCSE``): the momentum encoder is
    the backbone only; its pooled output goes through the *online* model's MLP (under no_grad), and
    the trainer calls ``update`` inside every training forward, before that step's optimizer update
    (so, with gradient accumulation, once per micro-batch).

NegativeQueue
    A FIFO of detached, L2-normalised momentum embeddings, oldest first. ``enqueue`` appends the
    newest batch and drops the oldest entries beyond ``size``; before it is full, only the filled part
    is used as negatives. Size 0 disables it.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from esimcse_cli.core.contrastive import ContrastiveModel, encode_with

VARIANTS = ("paper", "official")


def ema_(target: list[torch.Tensor], source: list[torch.Tensor], momentum: float) -> None:
    """In place: ``t ← m·t + (1 − m)·s`` for every pair (one fused call where torch has it)."""
    weight = 1.0 - float(momentum)
    if not target:
        return
    try:
        torch._foreach_lerp_(target, source, weight)
    except (AttributeError, RuntimeError):  # pragma: no cover - very old torch / exotic dtypes
        for t, s in zip(target, source):
            t.lerp_(s, weight)


class MomentumEncoder(nn.Module):
    def __init__(self, online: ContrastiveModel, momentum: float = 0.995, variant: str = "paper"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"momentum variant must be one of {VARIANTS}, got {variant!r}")
        self.momentum = float(momentum)
        self.variant = variant
        self.method = online.method
        self.backbone = copy.deepcopy(online.backbone)
        self.mlp = copy.deepcopy(online.mlp) if (variant == "paper" and online.mlp is not None) else None
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "MomentumEncoder":
        """Always eval: the momentum encoder never uses dropout."""
        return super().train(False)

    def _pairs(self, online: ContrastiveModel):
        mine = list(self.backbone.parameters())
        theirs = list(online.backbone.parameters())
        if self.mlp is not None:
            mine += list(self.mlp.parameters())
            theirs += list(online.mlp.parameters())
        return mine, theirs

    @torch.no_grad()
    def update(self, online: ContrastiveModel) -> None:
        """One EMA step towards the online model's current parameters."""
        mine, theirs = self._pairs(online)
        ema_(mine, [t.detach() for t in theirs], self.momentum)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], online: Optional[ContrastiveModel] = None) -> torch.Tensor:
        """L2-normalised, detached embeddings for the queue."""
        z = encode_with(self.backbone, self.method, input_ids, attention_mask)
        if self.mlp is not None:
            z = self.mlp(z)
        elif self.variant == "official" and online is not None and online.mlp is not None:
            z = online.mlp(z)
        return F.normalize(z.float(), p=2, dim=-1).detach()


class NegativeQueue:
    """FIFO of at most ``size`` embeddings (rows), oldest first."""

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu"):
        if size < 0:
            raise ValueError("queue size must be >= 0")
        self.size = int(size)
        self.dim = int(dim)
        self.items = torch.empty(0, dim, device=device)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    @property
    def full(self) -> bool:
        return len(self) >= self.size

    def tensor(self) -> Optional[torch.Tensor]:
        """The filled part (``None`` when empty), to use as negatives."""
        return self.items if len(self) else None

    @torch.no_grad()
    def enqueue(self, emb: torch.Tensor) -> None:
        if self.size == 0:
            return
        emb = F.normalize(emb.detach().float(), p=2, dim=-1).to(self.items.device)
        self.items = torch.cat([self.items, emb], dim=0)[-self.size :]

    def state_tensor(self) -> torch.Tensor:
        return self.items.detach().cpu().contiguous()

    def load_state_tensor(self, t: torch.Tensor) -> None:
        if t.ndim != 2 or (t.shape[0] and t.shape[1] != self.dim) or t.shape[0] > self.size:
            raise ValueError(f"saved queue has shape {tuple(t.shape)}, expected at most ({self.size}, {self.dim})")
        self.items = t.to(self.items.device, torch.float32)
