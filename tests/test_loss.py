"""The InfoNCE loss against a hand computation with explicit loops."""

from __future__ import annotations

import math

import torch

from esimcse_cli.core.loss import contrastive_loss


def reference(anchors, positives, queue, tau):
    """Plain-Python loss: -1/B sum_i log( e^{s(i,i)} / (sum_j e^{s(i,j)} + sum_k e^{s(i,q_k)}) )."""

    def cos(u, v):
        dot = sum(x * y for x, y in zip(u, v))
        return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))

    A, P, Q = anchors.tolist(), positives.tolist(), (queue.tolist() if queue is not None else [])
    total = 0.0
    for i, a in enumerate(A):
        terms = [math.exp(cos(a, p) / tau) for p in P] + [math.exp(cos(a, q) / tau) for q in Q]
        total += -math.log(terms[i] / sum(terms))
    return total / len(A)


def test_in_batch_only_matches_reference():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    got = contrastive_loss(a, p, None, 0.05).item()
    assert math.isclose(got, reference(a, p, None, 0.05), rel_tol=1e-5)


def test_with_queue_matches_reference_and_queue_adds_negatives():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 6, generator=g)
    p = a + 0.3 * torch.randn(4, 6, generator=g)
    q = torch.nn.functional.normalize(torch.randn(9, 6, generator=g), dim=-1)
    got = contrastive_loss(a, p, q, 0.1).item()
    assert math.isclose(got, reference(a, p, q, 0.1), rel_tol=1e-5)
    # extra negatives can only make each softmax term smaller, so the loss grows
    assert got > contrastive_loss(a, p, None, 0.1).item()
    # an empty queue is the same as none
    assert math.isclose(contrastive_loss(a, p, q[:0], 0.1).item(), contrastive_loss(a, p, None, 0.1).item(), rel_tol=1e-7)


def test_two_by_two_closed_form():
    # orthogonal anchors, positives equal to anchors: s(i,i)=1/τ, s(i,j)=0
    a = torch.eye(2)
    tau = 0.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert math.isclose(contrastive_loss(a, a.clone(), None, tau).item(), expected, rel_tol=1e-6)


def test_gradient_flows_to_anchors_and_positives_not_queue():
    a = torch.randn(3, 4, requires_grad=True)
    p = torch.randn(3, 4, requires_grad=True)
    q = torch.randn(2, 4, requires_grad=True)
    contrastive_loss(a, p, q.detach(), 0.05).backward()
    assert a.grad is not None and p.grad is not None and q.grad is None
