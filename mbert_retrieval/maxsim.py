"""Late-interaction (MaxSim) scoring: the one implementation used by the ColBERT model,
its training losses, reranking and the token indexes.

score(q, d) = sum over query tokens i of max over document tokens j of <q_i, d_j>

Two layouts: `maxsim` takes padded (N, L, d) tensors (differentiable: training, small reranks);
`maxsim_packed` takes token matrices concatenated with their lengths, as the indexes store them, and
reduces per document with a scatter (no padding, one matmul per block): the search path, on CPU or CUDA,
in float32 or (faster on CPUs with native bf16 and on GPUs) bfloat16 inputs with float32 accumulation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .ragged import offsets_of, token_rows

__all__ = ["maxsim", "maxsim_pairwise", "pad_token_vectors", "maxsim_rank", "maxsim_rerank", "maxsim_packed", "segment_max", "segment_ids"]


def pad_token_vectors(
    vectors: Sequence[torch.Tensor | np.ndarray],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a list of (n_i, dim) token matrices to (N, max_n, dim) and return it with a bool mask (N, max_n)."""
    if len(vectors) == 0:
        raise ValueError("pad_token_vectors needs at least one token matrix")
    tensors = [v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v)) for v in vectors]
    dim = tensors[0].shape[-1]
    max_len = max(max(t.shape[0] for t in tensors), 1)
    dtype = dtype or tensors[0].dtype
    device = device if device is not None else tensors[0].device
    out = torch.zeros(len(tensors), max_len, dim, dtype=dtype, device=device)
    mask = torch.zeros(len(tensors), max_len, dtype=torch.bool, device=device)
    for i, t in enumerate(tensors):
        n = t.shape[0]
        if n:
            out[i, :n] = t.to(device=device, dtype=dtype)
            mask[i, :n] = True
    return out, mask


def maxsim(
    queries: torch.Tensor,
    documents: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
    doc_chunk_size: int = 1024,
) -> torch.Tensor:
    """MaxSim score of every query against every document.

    queries: (Q, Lq, d), documents: (D, Ld, d), masks: bool (Q, Lq) / (D, Ld), True for real tokens.
    Returns (Q, D) float scores. Differentiable (used by training); documents are processed in chunks
    of `doc_chunk_size` to bound memory when reranking many candidates.
    """
    if queries.dim() == 2:
        queries = queries.unsqueeze(0)
        query_mask = None if query_mask is None else query_mask.unsqueeze(0)
    if documents.dim() == 2:
        documents = documents.unsqueeze(0)
        document_mask = None if document_mask is None else document_mask.unsqueeze(0)
    if queries.shape[-1] != documents.shape[-1]:
        raise ValueError(f"query dim {queries.shape[-1]} != document dim {documents.shape[-1]}")
    documents = documents.to(queries.dtype)
    outs = []
    for start in range(0, documents.shape[0], doc_chunk_size):
        docs = documents[start : start + doc_chunk_size]
        # (Q, D, Lq, Ld)
        sim = torch.einsum("qid,njd->qnij", queries, docs)
        if document_mask is not None:
            dmask = document_mask[start : start + doc_chunk_size].to(sim.device)
            sim = sim.masked_fill(~dmask[None, :, None, :], float("-inf"))
        best = sim.max(dim=-1).values  # (Q, D, Lq)
        # documents with no tokens give -inf: score them as 0 instead of NaN
        best = torch.where(torch.isinf(best), torch.zeros_like(best), best)
        if query_mask is not None:
            best = best * query_mask.to(best.dtype)[:, None, :]
        outs.append(best.sum(dim=-1))
    return torch.cat(outs, dim=1)


def maxsim_pairwise(
    queries: torch.Tensor,
    documents: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MaxSim of query i against document i only: (N, Lq, d) x (N, Ld, d) -> (N,)."""
    if queries.shape[0] != documents.shape[0]:
        raise ValueError("maxsim_pairwise needs as many documents as queries")
    scores = [
        maxsim(
            queries[i : i + 1],
            documents[i : i + 1],
            None if query_mask is None else query_mask[i : i + 1],
            None if document_mask is None else document_mask[i : i + 1],
        )[0, 0]
        for i in range(queries.shape[0])
    ]
    return torch.stack(scores)


def segment_ids(lengths: torch.Tensor) -> torch.Tensor:
    """Segment index of every row of a packed matrix: lengths [2, 0, 3] -> [0, 0, 2, 2, 2]."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)


def segment_max(values: torch.Tensor, segments: torch.Tensor, n_segments: int, empty: float = 0.0) -> torch.Tensor:
    """Row-wise max per segment: values (T, L), segments (T,) in [0, n_segments) -> (n_segments, L) float32;
    a segment without rows gets `empty`."""
    values = values.float()
    out = torch.full((n_segments, values.shape[1]), float("-inf"), dtype=values.dtype, device=values.device)
    out.scatter_reduce_(0, segments[:, None].expand(-1, values.shape[1]), values, "amax", include_self=True)
    return out.masked_fill_(torch.isneginf(out), empty)


def maxsim_packed(
    query_tokens: torch.Tensor,
    query_lengths: torch.Tensor,
    doc_tokens: torch.Tensor,
    doc_lengths: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """MaxSim of Q queries against D documents, both given as concatenated token matrices plus lengths:
    query_tokens (sum Lq, d), doc_tokens (sum Ld, d) -> (Q, D) float32 scores (an empty document scores 0).

    One (tokens x query tokens) matmul in `dtype` (default: the documents'), then a per-document max by
    scatter and a per-query sum by index_add: no padding on either side. Not differentiable-optimised:
    meant for search under `torch.no_grad()`; bound the block size (Td x sum Lq) at the call site."""
    if query_tokens.shape[-1] != doc_tokens.shape[-1]:
        raise ValueError(f"query dim {query_tokens.shape[-1]} != document dim {doc_tokens.shape[-1]}")
    device = doc_tokens.device
    dtype = dtype or doc_tokens.dtype
    q = query_tokens.to(device=device, dtype=dtype)
    sim = doc_tokens.to(dtype) @ q.T  # (Td, Tq)
    best = segment_max(sim, segment_ids(doc_lengths.to(device)), len(doc_lengths))  # (D, Tq)
    out = torch.zeros(len(query_lengths), len(doc_lengths), dtype=torch.float32, device=device)
    return out.index_add_(0, segment_ids(query_lengths.to(device)), best.T)


def maxsim_rank(
    query: np.ndarray | torch.Tensor,
    documents: Sequence[np.ndarray | torch.Tensor],
    k: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Score one query's token matrix against candidate documents' token matrices; return (order, scores)
    sorted best first (top `k` when given). Used for reranking and exact search."""
    return maxsim_rerank([query], [np.arange(len(documents))], documents, k, device, dtype)[0]


def maxsim_rerank(
    queries: Sequence[np.ndarray | torch.Tensor],
    candidates: Sequence[np.ndarray],
    documents: Sequence[np.ndarray | torch.Tensor],
    k: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rerank each query's candidates (indices into `documents`) by exact MaxSim: per query, (positions in its
    candidate list, scores) best first, top `k` when given. The documents are packed into one tensor once for
    all the queries (a batch of searches reads each candidate's vectors once), then each query is one gather
    and one `maxsim_packed` over its own candidates."""
    if not documents:
        return [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)) for _ in queries]
    tensors = [d if isinstance(d, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32)) for d in documents]
    dim = tensors[0].shape[-1]
    lengths = np.array([t.shape[0] for t in tensors], dtype=np.int64)
    offsets = offsets_of(lengths)
    packed = torch.cat([t.to(device=device, dtype=torch.float32).reshape(-1, dim) for t in tensors])
    out = []
    with torch.no_grad():
        for query, cand in zip(queries, candidates):
            cand = np.asarray(cand, dtype=np.int64)
            if len(cand) == 0:
                out.append((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)))
                continue
            q = query if isinstance(query, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(query))
            rows, lens = token_rows(offsets, cand)
            docs = packed.index_select(0, torch.from_numpy(rows).to(device))
            q = q.to(device=device, dtype=torch.float32)
            scores = maxsim_packed(q, torch.tensor([len(q)], device=device), docs, torch.from_numpy(lens).to(device), dtype=dtype)[0]
            top = torch.topk(scores, len(cand) if k is None else min(k, len(cand)))
            out.append((top.indices.cpu().numpy(), top.values.cpu().numpy()))
    return out
