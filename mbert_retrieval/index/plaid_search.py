"""PLAID search in torch: batched over queries, on the CPU (multi-threaded ops) or a CUDA device.

Per batch: one matmul gives every query token's score against every centroid, one top-k its probed
centroids. Per query, then:

1. probe: the top-`nprobe` centroids of each query token; candidates are the documents of their inverted
   lists, each scored (without touching its tokens) by sum_i max over its probed centroids c of S[i, c];
2. the best `ncandidates` get the centroid-interaction score sum_i max_j S[i, code_j], read from each
   document's distinct codes (the inverted lists transposed, made once per `PlaidTensors`: fewer rows than
   tokens; centroids whose best score is under `centroid_score_threshold` count 0), skipped when no more
   than `ndocs` candidates are left;
3. the best `ndocs` are scored with MaxSim over their decompressed tokens, computed without building the
   vectors: q . (c + r) / |c + r| = (S[i, code] + q . r) * inverse_norm, one (tokens x query tokens) matmul
   of the residuals over the candidates' tokens laid out (n docs, max length) -- a short document repeats
   its last token, which leaves its max unchanged -- so the per-document max is one `amax` (no Python
   loop over documents, no scatter).

The arrays live on the device as `PlaidTensors` (on the CPU they share memory with the numpy arrays). On a
CUDA device whose free memory cannot hold the per-token arrays (codes, residuals, inverse norms: ~40 bytes a
token at 2 bits), those stay in host memory and only the rows of each query's final candidates are copied to
the device (streamed); the routing arrays (centroids, inverted lists, distinct codes: ~5 bytes a token) are
always on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..maxsim import segment_max
from ..ragged import offsets_of
from .codec import ResidualCodec
from .late_interaction import as_tensor, padded_positions, token_positions

__all__ = ["PlaidTensors", "SearchOptions", "fits_on_device", "search_batch"]

_GROUP_TOKENS = 1024  # query tokens whose centroid scores are computed together (x C x 4 bytes of memory)
_BLOCK_ROWS = 1 << 18  # padded candidate token rows scored at once (x query tokens x 4 bytes of memory)
_RESIDENT_SHARE = 0.5  # per-token arrays go on a CUDA device when they take at most this share of its free memory


@dataclass
class SearchOptions:
    nprobe: int
    ncandidates: int
    ndocs: int
    centroid_score_threshold: float | None
    n_out: int  # results per query from this stage


@dataclass
class PlaidTensors:
    """The index arrays on one device: centroid codes, residual bytes, inverse token norms, document offsets,
    inverted lists (centroid -> documents)."""

    codec: ResidualCodec
    device: torch.device
    dtype: torch.dtype
    host: torch.device  # where codes, residuals and inv_norms are: `device` (resident) or the CPU (streamed)
    codes: torch.Tensor
    residuals: torch.Tensor
    inv_norms: torch.Tensor
    doc_offsets: torch.Tensor
    ivf_offsets: torch.Tensor
    ivf_docs: torch.Tensor
    doc_cells: torch.Tensor  # the distinct centroid codes of each document (the inverted lists transposed) ...
    doc_cell_offsets: torch.Tensor  # ... at doc_cells[doc_cell_offsets[d] : doc_cell_offsets[d + 1]]

    @classmethod
    def build(cls, codec: ResidualCodec, device: torch.device, dtype: torch.dtype, codes: np.ndarray, residuals: np.ndarray,
              inv_norms: np.ndarray, doc_offsets: np.ndarray, ivf_offsets: np.ndarray, ivf_docs: np.ndarray,
              resident: bool | None = None) -> PlaidTensors:  # fmt: skip
        """The arrays on `device`. Also made here: each document's distinct centroid codes (the inverted lists
        read by document), so the centroid interaction gathers one score row per distinct code, not per token
        (on scifact 58% of the rows). `ivf_docs` must list every searchable document (deleted ones may be absent).
        `resident`: whether the per-token arrays go on `device` too (None: `fits_on_device`, i.e. always on the
        CPU, on CUDA when they fit); when not, they stay in host memory and are streamed."""
        long = torch.int64
        if resident is None:
            resident = fits_on_device(len(codes) * (np.asarray(residuals).shape[1] + 8), device)  # + int32 code + float32 norm
        host = device if resident else torch.device("cpu")
        small = torch.int32 if max(len(codes), len(doc_offsets), len(ivf_docs)) < 2**31 else long  # row ids: int32 halves their memory
        ivf_docs = np.asarray(ivf_docs)
        cells = np.repeat(np.arange(len(ivf_offsets) - 1, dtype=np.int32), np.diff(ivf_offsets))
        by_doc = np.argsort(ivf_docs, kind="stable")
        counts = np.bincount(ivf_docs, minlength=len(doc_offsets) - 1)
        cell_offsets = offsets_of(counts)
        return cls(codec, device, dtype, host, as_tensor(codes, host, small), as_tensor(residuals, host), as_tensor(inv_norms, host),
                   as_tensor(doc_offsets, device, long), as_tensor(ivf_offsets, device, long), as_tensor(ivf_docs, device, small),
                   as_tensor(cells[by_doc], device, small), as_tensor(cell_offsets, device, long))  # fmt: skip

    def centroid_scores(self, query_tokens: torch.Tensor) -> torch.Tensor:
        """(n query tokens, C) float32 scores against every centroid."""
        centroids, _ = self.codec.torch_tables(self.device, self.dtype)
        return (query_tokens.to(self.dtype) @ centroids.T).float()


def fits_on_device(n_bytes: int, device: torch.device) -> bool:
    """Whether `n_bytes` of per-token arrays should live on `device`: always on the CPU; on CUDA when they take
    at most `_RESIDENT_SHARE` of its free memory (the rest is left to the search's working blocks)."""
    return device.type != "cuda" or n_bytes <= _RESIDENT_SHARE * torch.cuda.mem_get_info(device)[0]


def _top(values: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the `n` largest values, best first."""
    return torch.topk(values, min(n, len(values))).indices


def _probe(t: PlaidTensors, scores_t: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates (doc positions) of the probed lists `cells` and their probe scores."""
    cells = cells.unique()
    pos, seg, _ = token_positions(t.ivf_offsets, cells)
    docs, cell_of = t.ivf_docs.index_select(0, pos), cells[seg]
    keep = mask[docs]
    docs, cell_of = docs[keep], cell_of[keep]
    cand, inverse = torch.unique(docs, return_inverse=True)
    if len(cand) == 0:
        return cand, torch.zeros(0, device=t.device)
    return cand, segment_max(scores_t.index_select(0, cell_of), inverse, len(cand)).sum(1)


def _per_doc_maxsim(offsets: torch.Tensor, cand: torch.Tensor, row_scores: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """sum_i max_j row_scores(row j)[i] over the rows (at least one) of each candidate (rows of document d:
    offsets[d] to offsets[d + 1]). When the candidates padded to the longest exceed `_BLOCK_ROWS` rows, they go
    by increasing length in blocks of about that many padded rows: similar lengths pad little, and memory stays
    bounded whatever the document lengths."""
    if len(cand) == 0:
        return torch.zeros(0, dtype=torch.float32, device=cand.device)
    lengths_t = offsets[cand + 1] - offsets[cand]
    if len(cand) * int(lengths_t.max()) <= _BLOCK_ROWS:  # one block: no sorting, no scatter
        pos = padded_positions(offsets, cand)
        return row_scores(pos.view(-1)).view(*pos.shape, -1).amax(1).sum(1)
    lengths = lengths_t.cpu().numpy()
    order = np.argsort(lengths, kind="stable")
    out = torch.empty(len(cand), dtype=torch.float32, device=cand.device)
    start = 0
    while start < len(order):
        # sorted lengths: a block's padded size is (docs in it) x (its last length)
        fits = (np.arange(1, len(order) - start + 1) * lengths[order[start:]]) <= _BLOCK_ROWS
        stop = start + max(1, int(np.argmin(fits)) if not fits.all() else len(fits))
        rows = torch.from_numpy(order[start:stop]).to(cand.device)
        pos = padded_positions(offsets, cand[rows])
        out[rows] = row_scores(pos.view(-1)).view(*pos.shape, -1).amax(1).sum(1)
        start = stop
    return out


def _centroid_interaction(t: PlaidTensors, scores_t: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """sum_i max over the distinct codes c of each candidate of S[i, c]."""
    return _per_doc_maxsim(t.doc_cell_offsets, cand, lambda flat: scores_t.index_select(0, t.doc_cells.index_select(0, flat)))


def _decompressed_maxsim(t: PlaidTensors, q: torch.Tensor, scores_t: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """MaxSim of the query against the decompressed (normalised) tokens of each candidate."""
    q_t = q.to(t.dtype).T.contiguous()

    def token_scores(flat: torch.Tensor) -> torch.Tensor:
        rows = flat.to(t.host)  # streamed: gather the candidates' token rows in host memory, copy only those
        directions, scales = t.codec.residual_parts(t.residuals.index_select(0, rows).to(t.device), t.dtype)
        out = scores_t.index_select(0, t.codes.index_select(0, rows).to(t.device))  # the centroid part, q . c
        out += directions @ q_t if scales is None else (directions @ q_t).mul_(scales)  # + q . r (in `dtype`, accumulated in float32)
        return out.mul_(t.inv_norms.index_select(0, rows).to(t.device)[:, None])

    return _per_doc_maxsim(t.doc_offsets, cand, token_scores)


def search_one(t: PlaidTensors, q: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, direct: torch.Tensor | None,
               opt: SearchOptions, cells: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(scores, doc positions) of one query, best first, at most `opt.n_out`. `cells`: its probed centroids
    (default: the top `opt.nprobe` of each query token)."""
    scores_t = scores.T.contiguous()  # (C, Lq): gathering rows by code is contiguous
    n_final = max(opt.ndocs, opt.n_out)
    if direct is not None:
        cand = direct  # a small filter: every allowed document is a candidate
    else:
        if cells is None:
            cells = torch.topk(scores, min(opt.nprobe, scores.shape[1]), dim=1).indices
        cand, probe = _probe(t, scores_t, cells, mask)
        if len(cand) > opt.ncandidates:
            cand = cand[_top(probe, opt.ncandidates)]
    if len(cand) > n_final:
        thr = opt.centroid_score_threshold
        pruned_t = scores_t if thr is None else scores_t * (scores_t.max(dim=1, keepdim=True).values >= thr)
        cand = cand[_top(_centroid_interaction(t, pruned_t, cand), n_final)]
    if len(cand) == 0:
        return torch.zeros(0, device=t.device), cand
    final = _decompressed_maxsim(t, q, scores_t, cand)
    top = _top(final, opt.n_out)
    return final[top], cand[top]


def search_batch(t: PlaidTensors, queries: Sequence[np.ndarray], mask: np.ndarray, direct: np.ndarray | None,
                 opt: SearchOptions) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """(scores float32, doc positions int64) per query. `mask`: searchable doc positions; `direct`: score
    exactly these docs (a small filter) instead of probing."""
    with torch.no_grad():
        mask_t = as_tensor(mask, t.device)
        direct_t = None if direct is None else as_tensor(direct, t.device, torch.int64)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        start = 0
        while start < len(queries):  # groups of queries: centroid scores of at most ~_GROUP_TOKENS query tokens at once
            stop, n_tokens = start + 1, len(queries[start])
            while stop < len(queries) and n_tokens + len(queries[stop]) <= _GROUP_TOKENS:
                n_tokens += len(queries[stop])
                stop += 1
            group = queries[start:stop]
            tokens = as_tensor(np.concatenate(group).astype(np.float32, copy=False), t.device)
            scores = t.centroid_scores(tokens)
            cells = None if direct is not None else torch.topk(scores, min(opt.nprobe, scores.shape[1]), dim=1).indices
            bounds = offsets_of([len(q) for q in group]).tolist()
            for a, b in zip(bounds[:-1], bounds[1:]):
                s, d = search_one(t, tokens[a:b], scores[a:b], mask_t, direct_t, opt, None if cells is None else cells[a:b])
                out.append((s.float().cpu().numpy(), d.cpu().numpy()))
            start = stop
    return out
