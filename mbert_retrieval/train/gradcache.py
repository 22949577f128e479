"""Gradient caching (GradCache, Gao et al. 2021): contrastive batches far larger than what fits in memory.

1. encode every mini-batch without a graph (RNG state recorded per mini-batch);
2. compute the loss on the full batch of (detached) representations and its gradient w.r.t. them;
3. re-encode each mini-batch with a graph, RNG state restored (same dropout masks), and backpropagate
   the cached representation gradients into the parameters.

The parameter gradients equal those of one big batch (same dropout masks as the mini-batch passes).
"""

from __future__ import annotations

from typing import Callable, Sequence, cast

import torch
import torch.nn.functional as F

from .losses import Rep

__all__ = ["RandState", "concat_reps", "grad_cache_step", "EncodeFn"]

EncodeFn = Callable[[Sequence[str], bool], Rep]  # (texts, is_query) -> representation with gradients


class RandState:
    """Snapshot of the torch CPU and CUDA RNG states; `with state:` runs a block from that snapshot
    without disturbing the surrounding RNG stream."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []

    def __enter__(self) -> RandState:
        devices = list(range(len(self.cuda)))
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu)
        if self.cuda:
            torch.cuda.set_rng_state_all(self.cuda)
        return self

    def __exit__(self, *exc) -> None:
        self._fork.__exit__(*exc)


def concat_reps(parts: Sequence[Rep]) -> Rep:
    """Concatenate representations along the batch; token matrices are zero-padded to the widest (mask False)."""
    vecs = [p[0] for p in parts]
    if parts[0][1] is None:
        return torch.cat(vecs, dim=0), None
    width = max(v.shape[1] for v in vecs)
    vecs = [F.pad(v, (0, 0, 0, width - v.shape[1])) for v in vecs]
    masks = [F.pad(m, (0, width - m.shape[1]), value=False) for m in (cast(torch.Tensor, p[1]) for p in parts)]
    return torch.cat(vecs, dim=0), torch.cat(masks, dim=0)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def grad_cache_step(encode: EncodeFn, queries: Sequence[str], documents: Sequence[str],
                    loss_fn: Callable[[Rep, Rep], torch.Tensor], mini_batch_size: int | None = None) -> torch.Tensor:
    """Forward + backward of one batch (gradients accumulate into the parameters); returns the detached loss.

    Without `mini_batch_size` (or when everything fits in one mini-batch) this is a plain forward/backward.
    """
    if not mini_batch_size or mini_batch_size >= max(len(queries), len(documents)):
        loss = loss_fn(encode(queries, True), encode(documents, False))
        loss.backward()
        return loss.detach()

    cached: list[tuple[Sequence[str], bool, list[slice], list[RandState], Rep]] = []
    for texts, is_query in ((queries, True), (documents, False)):
        slices, states, parts = _chunks(len(texts), mini_batch_size), [], []
        for sl in slices:
            states.append(RandState())
            with torch.no_grad():
                v, m = encode(texts[sl], is_query)
            parts.append((v.detach(), None if m is None else m.detach()))
        v, m = concat_reps(parts)
        cached.append((texts, is_query, slices, states, (v.requires_grad_(True), m)))

    loss = loss_fn(cached[0][4], cached[1][4])
    loss.backward()

    for texts, is_query, slices, states, (full, _) in cached:
        grads = full.grad
        assert grads is not None  # `full` requires grad and the loss was built from it
        for sl, state in zip(slices, states):
            with state:
                v, _ = encode(texts[sl], is_query)
            g = grads[sl] if v.dim() == 2 else grads[sl, : v.shape[1]]
            torch.autograd.backward(v, grad_tensors=g.to(v.dtype))
    return loss.detach()
