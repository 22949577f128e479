"""Pooling, normalisation and Matryoshka truncation on unpadded token states: one implementation,
used by the bi-encoder at inference and in training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .encoder import EncodedBatch

__all__ = ["POOLING_MODES", "pool", "normalize", "truncate_dim"]

POOLING_MODES = ("cls", "mean", "max", "lasttoken")


def pool(batch: EncodedBatch, mode: str = "mean", skip_first: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per sequence from token states (B, hidden).

    `skip_first[i]` tokens of sequence i (e.g. a prompt, when a sentence-transformers model says
    `include_prompt: false`) are left out of mean/max pooling.
    """
    if mode not in POOLING_MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; choose one of {POOLING_MODES}")
    cu, hidden = batch.cu_seqlens, batch.hidden
    if mode == "cls":
        return hidden[cu[:-1]]
    if mode == "lasttoken":
        return hidden[cu[1:] - 1]
    seg = batch.segment_ids()
    keep = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    if skip_first is not None:
        offset = torch.arange(hidden.shape[0], device=hidden.device) - cu[:-1][seg]
        keep = offset >= skip_first.to(hidden.device)[seg]
    n = len(batch)
    if mode == "mean":
        summed = torch.zeros(n, hidden.shape[1], dtype=hidden.dtype, device=hidden.device)
        summed.index_add_(0, seg[keep], hidden[keep])
        counts = torch.bincount(seg[keep], minlength=n).clamp(min=1).to(hidden.dtype)
        return summed / counts[:, None]
    out = torch.full((n, hidden.shape[1]), float("-inf"), dtype=hidden.dtype, device=hidden.device)
    index = seg[keep][:, None].expand(-1, hidden.shape[1])
    out = out.scatter_reduce(0, index, hidden[keep], "amax", include_self=True)
    return torch.where(torch.isinf(out), torch.zeros_like(out), out)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows (cosine similarity becomes inner product)."""
    return F.normalize(x, p=2, dim=-1)


def truncate_dim(x: torch.Tensor, dim: int | None, renormalize: bool = True) -> torch.Tensor:
    """Matryoshka truncation: keep the first `dim` components (then renormalise)."""
    if dim is None or dim >= x.shape[-1]:
        return x
    if dim < 1:
        raise ValueError(f"truncate_dim must be positive, got {dim}")
    x = x[..., :dim]
    return normalize(x) if renormalize else x
