"""Momentum encoder (EMA, dropout off, no grads, the two variants) and the FIFO queue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from esimcse_cli.core.contrastive import ContrastiveModel, encode_with
from esimcse_cli.core.models import load_backbone
from esimcse_cli.core.momentum import MomentumEncoder, NegativeQueue


@pytest.fixture()
def online(tiny_model_dir):
    b = load_backbone(str(tiny_model_dir), device="cpu")
    m = ContrastiveModel(b.model, pooler="cls", mlp=True, seed=0)
    m.train()
    return m


def batch():
    ids = torch.tensor([[2, 40, 41, 42, 3], [2, 50, 51, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    return ids, mask


def test_ema_update_is_m_theta_m_plus_one_minus_m_theta(online):
    mom = MomentumEncoder(online, momentum=0.9, variant="paper")
    before = [p.detach().clone() for p in list(mom.backbone.parameters()) + list(mom.mlp.parameters())]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    now = [p.detach().clone() for p in list(online.backbone.parameters()) + list(online.mlp.parameters())]
    mom.update(online)
    after = list(mom.backbone.parameters()) + list(mom.mlp.parameters())
    assert len(after) == len(before) == len(now)
    for a, b, t in zip(after, before, now):
        torch.testing.assert_close(a, 0.9 * b + 0.1 * t, rtol=1e-5, atol=1e-6)


def test_momentum_has_dropout_off_and_no_gradients(online):
    mom = MomentumEncoder(online, momentum=0.995)
    mom.train()  # must stay in eval mode
    assert not mom.training and not any(m.training for m in mom.modules())
    assert not any(p.requires_grad for p in mom.parameters())
    ids, mask = batch()
    a, b = mom(ids, mask), mom(ids, mask)
    assert torch.equal(a, b)  # no dropout: identical outputs
    assert not a.requires_grad
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    # the online model in train mode does use dropout (the test would be vacuous otherwise)
    assert not torch.equal(online(ids, mask), online(ids, mask))


def test_momentum_is_a_copy_not_a_view(online):
    mom = MomentumEncoder(online)
    p_on = next(online.backbone.parameters())
    p_mo = next(mom.backbone.parameters())
    assert torch.equal(p_on, p_mo) and p_on.data_ptr() != p_mo.data_ptr()


def test_paper_variant_has_its_own_mlp_official_uses_the_online_mlp(online):
    ids, mask = batch()
    paper = MomentumEncoder(online, variant="paper")
    official = MomentumEncoder(online, variant="official")
    assert paper.mlp is not None and official.mlp is None
    with torch.no_grad():
        pooled = encode_with(official.backbone.eval(), "cls_before_pooler", ids, mask)
        torch.testing.assert_close(official(ids, mask, online), F.normalize(online.mlp(pooled), dim=-1))
        before_paper = paper(ids, mask, online)
        online.mlp.dense.weight.mul_(3.0)  # change the online MLP only
        assert torch.equal(paper(ids, mask, online), before_paper)  # paper: own copy, unchanged
        torch.testing.assert_close(official(ids, mask, online), F.normalize(online.mlp(pooled), dim=-1))
        assert not torch.allclose(official(ids, mask, online), before_paper)


def test_queue_is_fifo_with_fixed_size():
    q = NegativeQueue(size=5, dim=2)
    assert q.tensor() is None and len(q) == 0
    rows = [torch.tensor([[float(i), 1.0]]) for i in range(8)]
    q.enqueue(torch.cat(rows[:3]))
    assert len(q) == 3 and len(q) < q.size  # partly filled: only the filled part is used
    q.enqueue(torch.cat(rows[3:6]))
    assert len(q) == 5 and len(q) >= q.size
    expected = F.normalize(torch.cat(rows[1:6]), dim=-1)  # oldest (row 0) dropped
    torch.testing.assert_close(q.tensor(), expected)
    q.enqueue(torch.cat(rows[6:8]))
    torch.testing.assert_close(q.tensor(), F.normalize(torch.cat(rows[3:8]), dim=-1))
    # a batch larger than the queue keeps its newest rows
    q.enqueue(torch.arange(14, dtype=torch.float32).reshape(7, 2) + 1)
    torch.testing.assert_close(q.tensor(), F.normalize(torch.arange(14, dtype=torch.float32).reshape(7, 2)[2:] + 1, dim=-1))


def test_queue_entries_are_detached_and_zero_size_is_off():
    x = torch.randn(3, 4, requires_grad=True)
    q = NegativeQueue(size=4, dim=4)
    q.enqueue(x * 2)
    assert not q.tensor().requires_grad
    off = NegativeQueue(size=0, dim=4)
    off.enqueue(x)
    assert off.tensor() is None


def test_paper_starts_as_an_exact_copy_official_from_fresh_weights(online):
    """The official start (random weights, as the released code's momentum_model) is checked against a
    re-implementation of ESimCSE/esimcse/models.py BertForCL.__init__ in tests/test_official.py."""
    paper = MomentumEncoder(online, variant="paper")
    official = MomentumEncoder(online, variant="official", seed=0)
    mine, theirs = list(official.backbone.parameters()), list(online.backbone.parameters())
    assert all(torch.equal(a, b) for a, b in zip(paper.backbone.parameters(), theirs))
    weights = [(a, b) for a, b in zip(mine, theirs) if a.ndim == 2]
    assert weights and not any(torch.equal(a, b) for a, b in weights)


def test_fresh_init_needs_a_transformers_model():
    from esimcse_cli.core.momentum import fresh_init_

    with pytest.raises(ValueError, match="init_weights"):
        fresh_init_(torch.nn.Linear(2, 2), seed=0)
