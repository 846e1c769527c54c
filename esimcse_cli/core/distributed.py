"""torchrun helpers: process group set-up, gathers that keep the local gradient, gradient sums.

Training under ``torchrun --nproc_per_node N -m esimcse_cli train ...`` uses plain
``torch.distributed`` collectives rather than the ``DistributedDataParallel`` wrapper:

* every rank computes the loss over the *global* batch (anchors and positives gathered from all
  ranks, with the local slice replaced by the local tensor so that its gradient flows, as SimCSE
  does), so the loss value is the same on every rank;
* after backward, gradients are summed across ranks (:func:`all_reduce_grads`). Since each rank's
  backward holds the part of the global loss's gradient that flows through its own embeddings, the sum
  is exactly the gradient a single process would get on the whole global batch;
* the momentum embeddings are gathered before they are enqueued, so every rank holds the same queue.

Backend: ``nccl`` when CUDA is used, ``gloo`` on CPU. Single-process runs skip all of this.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterable, List

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init(use_cuda: bool) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``t`` from all ranks in rank order; the local slice keeps its autograd graph."""
    if not info.enabled:
        return t
    parts: List[torch.Tensor] = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(parts, t.detach().contiguous())
    parts[info.rank] = t
    return torch.cat(parts, dim=0)


@torch.no_grad()
def gather(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_grads(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Sum gradients across ranks, in one flat buffer per dtype."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def any_rank(flag: bool, info: DistInfo, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is set on any rank (used so all ranks stop at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (``obj`` itself with one process)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_all(info: DistInfo, poll_s: float = 0.05) -> None:
    """A barrier that keeps Python responsive: a SIGINT or SIGTERM (torchrun stopping a failed run) is handled
    while waiting, so that rank 0 still removes its temporary output, instead of after a blocking barrier."""
    if not info.enabled:
        return
    work = dist.barrier(async_op=True)
    while not work.is_completed():
        time.sleep(poll_s)
    work.wait()


def lost_peer(exc: BaseException, info: DistInfo) -> bool:
    """``exc`` is a collective that failed because another rank went away (which reports its own error)."""
    if not info.enabled or not isinstance(exc, RuntimeError):
        return False
    kinds = tuple(getattr(dist, n) for n in ("DistError", "DistBackendError", "DistNetworkError") if hasattr(dist, n))
    text = str(exc)
    return (bool(kinds) and isinstance(exc, kinds)) or any(w in text for w in ("Connection closed by peer", "Connection reset by peer"))
