"""Padding: right-pad token ids, and run one batch as a few length groups to pad less.

A transformer encoder treats the rows of a batch independently (the padding is masked), so a
batch may be cut into groups of rows, each padded only to its own longest row, and the pooled
outputs put back in the original order: every row gets the same representation, up to float
rounding, and the gradients are the same. What changes is the work: padded positions cost as
much as real ones. In training, every row of a batch otherwise pads to the longest row, and
ESimCSE's repeated copies are up to ``max(2, int(dup_rate * N))`` tokens longer than the
originals, so a batch of originals and copies pads to far more than it holds.

:func:`length_groups` cuts the rows, sorted by length, into the contiguous groups that minimise
``padded tokens + overhead_tokens * groups`` (exact, by dynamic programming over the sorted
lengths). ``overhead_tokens`` prices the fixed cost of one more forward and backward (kernel
launches, Python) in tokens: small on a CPU, where the work is proportional to the tokens, large
on a GPU, where a small batch costs about as much as a full one.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

# The price of one more forward+backward, in padded tokens, for the default grouping. On a CPU the work
# follows the tokens, so a small price lets a batch split where that pads less; on CUDA one more small
# forward costs about as much as a large one, so grouping only pays there for very uneven lengths. The
# measurements behind the CPU value: docs/RESULTS.md ("Figures behind code comments").
OVERHEAD_TOKENS = {"cpu": 256, "cuda": 8192}


def overhead_for(device: str | torch.device) -> int:
    """The default ``overhead_tokens`` for a device (``cuda:1`` -> ``cuda``)."""
    kind = torch.device(device).type
    return OVERHEAD_TOKENS.get(kind, OVERHEAD_TOKENS["cuda"])


def pad_ids(batch_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Right-pad to the longest sequence; the mask is ``None`` when nothing needed padding."""
    lengths = np.fromiter((len(x) for x in batch_ids), dtype=np.int64, count=len(batch_ids))
    width = int(lengths.max())
    ids = np.full((len(batch_ids), width), int(pad_id), dtype=np.int64)
    for row, seq in enumerate(batch_ids):
        ids[row, : len(seq)] = seq
    input_ids = torch.from_numpy(ids)
    if int(lengths.min()) == width:
        return input_ids, None
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    return input_ids, torch.from_numpy(mask)


def length_groups(lengths: Sequence[int] | np.ndarray, overhead_tokens: float) -> List[np.ndarray]:
    """Row indices in groups, shortest rows first, minimising padded tokens + ``overhead_tokens`` per group.

    Groups are contiguous runs of the rows sorted by length (a stable sort, so ties keep their order);
    the cut is exact (O(n^2) over the n rows, a few milliseconds for n = 512).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(lengths, kind="stable")
    width = lengths[order].astype(np.float64)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    starts = np.arange(n)
    for end in range(1, n + 1):
        # a group of rows start..end-1 pads to width[end-1], the longest of them
        cost = best[:end] + (end - starts[:end]) * width[end - 1] + overhead_tokens
        start = int(np.argmin(cost))  # first minimum: deterministic
        best[end], cut[end] = cost[start], start
    groups = []
    end = n
    while end > 0:
        groups.append(order[cut[end] : end])
        end = int(cut[end])
    return groups[::-1]


def padded_tokens(lengths: Sequence[int] | np.ndarray, groups: Optional[List[np.ndarray]] = None) -> int:
    """Tokens fed to the model: one padded batch (``groups=None``) or each group padded to its longest."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if groups is None:
        return int(len(lengths) * lengths.max()) if len(lengths) else 0
    return int(sum(len(g) * lengths[g].max() for g in groups))


def forward_by_length(
    fn: Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor],
    batch_ids: Sequence[Sequence[int]],
    pad_id: int,
    device: str | torch.device = "cpu",
    overhead_tokens: Optional[float] = None,
) -> torch.Tensor:
    """``fn(input_ids, attention_mask)`` over ``batch_ids``, one call per length group; rows in input order.

    ``overhead_tokens=None`` makes one call over the whole batch (padded to its longest row). The
    result is differentiable: gradients flow back through every group's call.
    """
    lengths = np.fromiter((len(x) for x in batch_ids), dtype=np.int64, count=len(batch_ids))
    groups = [np.arange(len(lengths))] if overhead_tokens is None else length_groups(lengths, overhead_tokens)
    outs = []
    for g in groups:
        x, m = pad_ids([batch_ids[i] for i in g], pad_id)
        outs.append(fn(x.to(device, non_blocking=True), None if m is None else m.to(device, non_blocking=True)))
    perm = np.concatenate(groups)
    z = outs[0] if len(outs) == 1 else torch.cat(outs)
    if np.array_equal(perm, np.arange(len(perm))):
        return z
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))
    return z.index_select(0, torch.from_numpy(inverse).to(z.device))
