"""The online encoder: a transformers backbone + a SimCSE pooler + the training-only MLP.

``pooler`` names how token states become one vector during training:

* ``cls``: the raw last-layer [CLS] state, followed by the MLP (dense + tanh, SimCSE's ``MLPLayer``)
  when ``mlp`` is on. This is SimCSE's ``cls`` with ``mlp_only_train``: the MLP exists in training
  only, and the exported model pools with ``cls_before_pooler`` (raw [CLS], no MLP).
* ``cls_before_pooler``, ``avg``, ``avg_first_last``, ``avg_top2``: the poolers of
  :mod:`esimcse_cli.core.pooling`; the MLP is off unless asked for (``--mlp``), and then again
  used in training only.

The MLP is initialised like SimCSE's (normal(0, initializer_range) weights, zero bias) from a
seeded generator, so runs are reproducible.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from esimcse_cli.core.pooling import hidden_pooling, needs_hidden_states, pool


class MLP(nn.Module):
    """dense + tanh over the pooled vector (SimCSE's ``MLPLayer``)."""

    def __init__(self, dim: int, init_std: float = 0.02, seed: int = 0):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.activation = nn.Tanh()
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            self.dense.weight.copy_(torch.randn(dim, dim, generator=g) * init_std)
            self.dense.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


def encode_with(backbone: nn.Module, pooling: str, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Backbone forward + pooling (the one place training pools)."""
    hidden = needs_hidden_states(pooling)
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden, return_dict=True)
    return pool(pooling, out.last_hidden_state, attention_mask, hidden_states=out.hidden_states if hidden else None)


class ContrastiveModel(nn.Module):
    """Online encoder used in training: ``forward`` returns the training representation.

    ``pooler`` is the training pooler's name; ``pooling`` the :func:`pool` method behind it, which is also
    the pooling the exported model records (the MLP is training-only).
    """

    def __init__(self, backbone: nn.Module, pooler: str = "cls", mlp: bool = True, seed: int = 0):
        super().__init__()
        self.backbone = backbone
        self.pooler = pooler
        self.pooling = hidden_pooling(pooler)
        dim = int(backbone.config.hidden_size)
        std = float(getattr(backbone.config, "initializer_range", 0.02) or 0.02)
        self.mlp: Optional[MLP] = MLP(dim, std, seed) if mlp else None

    def pooled(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        return encode_with(self.backbone, self.pooling, input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        z = self.pooled(input_ids, attention_mask)
        return self.mlp(z) if self.mlp is not None else z


def choose_pooler(model_spec, preset=None) -> tuple[str, str]:
    """``--pooler auto``: ``(training pooler, why)``.

    The pooling the base model declares (:func:`esimcse_cli.core.models.declared_pooling`: a folder's
    ``esimcse.json``, or sentence-transformers' ``1_Pooling/config.json``), so that training a
    sentence-fine-tuned model keeps the pooling it was fine-tuned with: the bundled all-MiniLM-L6-v2 was
    trained with mean pooling, and its raw [CLS] state is untrained. A declared [CLS] pooling becomes the
    paper's ``cls`` (raw [CLS] + training-only MLP, raw [CLS] exported). Where nothing is declared (a raw BERT
    such as ``bert-base-uncased``), or under ``--preset`` (the paper's hyperparameters for raw models), the
    paper's ``cls``.
    """
    from esimcse_cli.core.models import declared_pooling

    if preset is not None:
        return "cls", f"--preset {preset}: the paper's [CLS] + training-only MLP"
    pooling, where = declared_pooling(model_spec)
    if pooling is None:
        return "cls", "the model declares no pooling: the paper's [CLS] + training-only MLP"
    if pooling in ("cls", "cls_before_pooler"):
        return "cls", f"{where} declares [CLS] pooling: [CLS] + training-only MLP, raw [CLS] exported"
    return pooling, f"declared by {where}"
