"""The contrastive (InfoNCE) loss of SimCSE / ESimCSE.

For anchors ``h_i`` (batch ``B``), positives ``h_j+`` and queue entries ``q_k`` (``K``, may be 0):

    logits_i = [cos(h_i, h_1+)/τ, ..., cos(h_i, h_B+)/τ,  cos(h_i, q_1)/τ, ..., cos(h_i, q_K)/τ]
    loss     = mean_i  CrossEntropy(logits_i, label = i)

The positives of the other sentences are in-batch negatives; the queue entries (detached, already
L2-normalised momentum-encoder embeddings of earlier batches) are extra negatives only. The loss is
computed in float32 whatever the model's dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def contrastive_logits(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    queue: Optional[torch.Tensor] = None,
    temperature: float = 0.05,
) -> torch.Tensor:
    """(B, B + K) cosine-similarity logits divided by the temperature."""
    a = F.normalize(anchors.float(), p=2, dim=-1)
    p = F.normalize(positives.float(), p=2, dim=-1)
    logits = a @ p.t()
    if queue is not None and queue.shape[0] > 0:
        q = F.normalize(queue.float(), p=2, dim=-1)  # a no-op for stored entries; cheap, and safe for callers
        logits = torch.cat([logits, a @ q.t()], dim=1)
    return logits / temperature


def contrastive_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    queue: Optional[torch.Tensor] = None,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Mean cross-entropy of :func:`contrastive_logits` with label ``i`` for row ``i``."""
    if anchors.shape != positives.shape:
        raise ValueError(f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} differ in shape")
    logits = contrastive_logits(anchors, positives, queue, temperature)
    labels = torch.arange(anchors.shape[0], device=anchors.device)
    return F.cross_entropy(logits, labels)
