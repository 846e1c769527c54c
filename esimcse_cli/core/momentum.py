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

    It also *starts from random weights*, as the released code does by accident: ``BertForCL.__init__``
    / ``RobertaForCL.__init__`` (``ESimCSE/esimcse/models.py``) build ``momentum_model`` and copy
    ``self.bert``'s parameters into it inside ``__init__``, i.e. *before* ``from_pretrained`` loads the
    checkpoint (and ``cl_init`` then calls ``init_weights()`` on the whole model). The checkpoint has no
    ``momentum_model.*`` keys, so they stay newly initialised: every ``logs/*.log`` of the release warns
    ``Some weights of ...ForCL were not initialized from the model checkpoint ... newly initialized:
    ['momentum_model.embeddings.word_embeddings.weight', ...``. Here the copy is re-initialised with the
    backbone's own transformers initialisation (``init_weights`` / ``_init_weights``: normal(0,
    initializer_range) Linear and Embedding weights, zero biases, LayerNorm 1 / 0), from a CPU generator
    seeded from the run's seed (the global RNG state is left as it was), so the start is reproducible.
    With ``m = 0.995`` the random part decays as ``0.995**k`` (about 0.7 % after 1000 EMA steps).

NegativeQueue
    A FIFO of detached, L2-normalised momentum embeddings, oldest first. ``enqueue`` appends the
    newest batch and drops the oldest entries beyond ``size``; before it is full, only the filled part
    is used as negatives. Size 0 disables it.
"""

from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esimcse_cli.core.contrastive import ContrastiveModel, encode_with
from esimcse_cli.core.variants import VARIANTS


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


def _init_seed(seed: int) -> int:
    """The seed of the official variant's random start, derived from the run's seed (a stream of its own)."""
    return int(np.random.SeedSequence([int(seed), 0x4D4F4D]).generate_state(1, dtype=np.uint64)[0] >> 1)


def fresh_init_(model: nn.Module, seed: int = 0) -> nn.Module:
    """In place: give a transformers model the weights a fresh model of its config gets, seeded; returns it.

    Calls the model's own ``init_weights()`` (its ``_init_weights`` per module) on CPU under a CPU
    generator seeded with :func:`_init_seed` (``seed``), inside ``torch.random.fork_rng`` so the caller's
    RNG state does not move. transformers marks loaded modules and tensors ``_is_hf_initialized`` and
    then skips them; the marks are cleared first so that every weight is drawn again.
    """
    if not callable(getattr(model, "init_weights", None)) or not callable(getattr(model, "_init_weights", None)):
        raise ValueError(f"{type(model).__name__} has no transformers init_weights(): cannot start it from random weights")
    for m in model.modules():
        tensors = list(m.parameters(recurse=False)) + [b for b in m.buffers(recurse=False) if b is not None]
        for obj in [m, *tensors]:
            if getattr(obj, "_is_hf_initialized", False):
                obj._is_hf_initialized = False
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    model.to("cpu")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.random.default_generator.manual_seed(_init_seed(seed))
        model.init_weights()
    return model.to(device)


class MomentumEncoder(nn.Module):
    def __init__(self, online: ContrastiveModel, momentum: float = 0.995, variant: str = "paper", seed: int = 0):
        """``paper``: an exact copy of ``online``'s backbone (and MLP). ``official``: the backbone's
        structure with freshly initialised weights (:func:`fresh_init_`, seeded from ``seed``)."""
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"momentum variant must be one of {VARIANTS}, got {variant!r}")
        self.momentum = float(momentum)
        self.variant = variant
        self.pooling = online.pooling
        self.backbone = copy.deepcopy(online.backbone)
        if variant == "official":
            fresh_init_(self.backbone, seed)
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
        z = encode_with(self.backbone, self.pooling, input_ids, attention_mask)
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
