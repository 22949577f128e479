"""Multi-process helpers for training: gather embeddings with gradients (more in-batch negatives) and
average parameter gradients. With one process (or no process group) every helper is the identity.

Why gradients are averaged by hand instead of wrapping the model in DistributedDataParallel: gradient
caching runs several backward passes per optimizer step through sub-modules of the model, which DDP's
forward-wrapped reducer does not support; one explicit bucketed all-reduce per step is equivalent.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist

__all__ = ["rank_and_world", "gather_with_grad", "gather_no_grad", "pad_to_global_width", "all_reduce_gradients",
           "all_reduce_mean"]


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums, over processes, the gradients w.r.t. this process's rows."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        rank, world = rank_and_world()
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        ctx.rows = (rank * t.shape[0], (rank + 1) * t.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rows[0]:ctx.rows[1]]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` (same shape on every process) along dim 0, keeping gradients: the backward pass sums
    the gradients every process computed for this process's rows."""
    _, world = rank_and_world()
    if world == 1:
        return t
    return _GatherWithGrad.apply(t)


def gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    _, world = rank_and_world()
    if world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def pad_to_global_width(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token matrices (N, L, d) and masks (N, L) to the largest L over all processes (so they can be gathered)."""
    _, world = rank_and_world()
    if world == 1:
        return x, mask
    width = torch.tensor([x.shape[1]], device=x.device)
    dist.all_reduce(width, op=dist.ReduceOp.MAX)
    extra = int(width.item()) - x.shape[1]
    if extra:
        x = torch.nn.functional.pad(x, (0, 0, 0, extra))
        mask = torch.nn.functional.pad(mask, (0, extra), value=False)
    return x, mask


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    _, world = rank_and_world()
    if world == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], bucket_numel: int = 25_000_000) -> None:
    """Average `.grad` of `params` over processes (buckets of flattened gradients; missing grads count as 0)."""
    _, world = rank_and_world()
    if world == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.Tensor] = []
    size = 0
    with_end: list[torch.nn.Parameter | None] = [*params, None]  # None: flush the last bucket
    for param in with_end:
        if param is not None:
            assert param.grad is not None  # set to zeros above when missing
            bucket.append(param.grad)
            size += param.grad.numel()
        if bucket and (param is None or size >= bucket_numel):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat /= world
            offset = 0
            for g in bucket:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
            bucket, size = [], 0
