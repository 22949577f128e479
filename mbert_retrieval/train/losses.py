"""Training losses for the bi-encoder and ColBERT.

- `info_nce`: cross-entropy over cosine similarities / temperature of each query against every document of
  the (gathered) batch: its positive, its hard negatives and all other queries' documents.
- `matryoshka_info_nce`: sum of `info_nce` over truncated, renormalised prefixes of the vectors.
- `colbert_scores` + `info_nce_from_scores`: the same contrastive objective on MaxSim scores (PyLate's
  Contrastive: temperature 1 by default).
- `kl_distillation`: KL(teacher || student) over each query's own documents, as PyLate's Distillation
  (log-softmax of teacher scores as target, optional min-max normalisation of student scores).
- `RetrievalLoss`: picks and wires the above for a `TrainBatch` (gathering across processes).

sentence-transformers' losses (CachedMultipleNegativesRankingLoss, MatryoshkaLoss) need a
SentenceTransformer module and its feature dicts; our models are not, so the (small) losses live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..maxsim import maxsim
from .data import TrainBatch
from .dist import gather_no_grad, gather_with_grad, pad_to_global_width, rank_and_world

__all__ = ["info_nce_from_scores", "info_nce", "matryoshka_info_nce", "colbert_scores", "kl_distillation",
           "false_negative_mask", "RetrievalLoss", "Rep"]

Rep = tuple[torch.Tensor, "torch.Tensor | None"]  # (vectors (B, d) or token matrices (B, L, d), mask or None)


def info_nce_from_scores(scores: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                         exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of `scores / temperature` (Q, N) with the positive column `labels` (Q,);
    `exclude` (Q, N) bool drops candidates (false negatives) from the softmax."""
    logits = scores / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, labels)


def info_nce(queries: torch.Tensor, documents: torch.Tensor, labels: torch.Tensor, temperature: float = 0.05,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE on cosine similarity: queries (Q, d), documents (N, d), labels (Q,) index of each positive."""
    scores = F.normalize(queries, dim=-1) @ F.normalize(documents, dim=-1).T
    return info_nce_from_scores(scores, labels, temperature, exclude)


def matryoshka_info_nce(queries: torch.Tensor, documents: torch.Tensor, labels: torch.Tensor, dims: Sequence[int],
                        temperature: float = 0.05, exclude: torch.Tensor | None = None,
                        weights: Sequence[float] | None = None) -> torch.Tensor:
    """Sum over `dims` of InfoNCE on the first `dim` components (renormalised); include the full size to train it."""
    weights = weights or [1.0] * len(dims)
    total = queries.new_zeros(())
    for dim, w in zip(dims, weights):
        if dim > queries.shape[-1]:
            raise ValueError(f"matryoshka dim {dim} exceeds the embedding size {queries.shape[-1]}")
        total = total + w * info_nce(queries[:, :dim], documents[:, :dim], labels, temperature, exclude)
    return total


def colbert_scores(queries: torch.Tensor, documents: torch.Tensor, query_mask: torch.Tensor | None = None,
                   document_mask: torch.Tensor | None = None, query_chunk: int = 16) -> torch.Tensor:
    """(Q, N) MaxSim scores with gradients; queries are processed in chunks to bound peak memory."""
    parts = [maxsim(queries[s:s + query_chunk], documents,
                    None if query_mask is None else query_mask[s:s + query_chunk], document_mask)
             for s in range(0, queries.shape[0], query_chunk)]
    return torch.cat(parts, dim=0)


def kl_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                    normalize_scores: bool = False) -> torch.Tensor:
    """KL(teacher || student) over each row (B, K): student log-softmax(scores / temperature) against
    log-softmax(teacher), batch mean. `normalize_scores` min-max normalises student rows first (PyLate)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student scores {tuple(student.shape)} and teacher scores {tuple(teacher.shape)} differ")
    if normalize_scores:
        lo = student.min(dim=1, keepdim=True).values
        hi = student.max(dim=1, keepdim=True).values
        student = (student - lo) / (hi - lo + 1e-8)
    return F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher.float(), dim=-1),
                    reduction="batchmean", log_target=True)


def false_negative_mask(doc_keys: torch.Tensor, positive_keys: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(Q, N) True where document j is a known positive of query i other than its labelled one."""
    hit = (doc_keys[None, :, None] == positive_keys[:, None, :]).any(dim=-1)
    hit[torch.arange(labels.numel(), device=labels.device), labels] = False
    return hit


def _group_scores_dense(q: torch.Tensor, d: torch.Tensor, group: int) -> torch.Tensor:
    d = F.normalize(d, dim=-1).view(q.shape[0], group, -1)
    return torch.einsum("bd,bgd->bg", F.normalize(q, dim=-1), d)


def _group_scores_colbert(q: torch.Tensor, qm: torch.Tensor | None, d: torch.Tensor, dm: torch.Tensor | None,
                          group: int) -> torch.Tensor:
    rows = []
    for i in range(q.shape[0]):
        sl = slice(i * group, (i + 1) * group)
        rows.append(maxsim(q[i:i + 1], d[sl], None if qm is None else qm[i:i + 1], None if dm is None else dm[sl])[0])
    return torch.stack(rows)


@dataclass
class RetrievalLoss:
    """The loss of one batch from query and document representations (local to this process)."""

    kind: str = "dense"  # "dense" | "colbert"
    loss: str = "infonce"  # "infonce" | "distill"
    temperature: float = 0.05
    matryoshka_dims: Sequence[int] | None = None
    gather_across_devices: bool = True
    distill_normalize: bool = False

    def __call__(self, q: Rep, d: Rep, batch: TrainBatch) -> torch.Tensor:
        qv, qm = q
        dv, dm = d
        if self.loss == "distill":
            if batch.teacher_scores is None:
                raise ValueError("distillation needs teacher scores in the batch")
            if self.kind == "dense":
                student = _group_scores_dense(qv, dv, batch.group_size)
            else:
                student = _group_scores_colbert(qv, qm, dv, dm, batch.group_size)
            return kl_distillation(student, batch.teacher_scores.to(student.device), self.temperature,
                                   self.distill_normalize)
        doc_keys = batch.doc_keys.to(qv.device)
        offset = 0
        rank, world = rank_and_world()
        if self.gather_across_devices and world > 1:
            if dm is not None:
                dv, dm = pad_to_global_width(dv, dm)
                dm = gather_no_grad(dm)
            dv = gather_with_grad(dv)
            doc_keys = gather_no_grad(doc_keys)
            offset = rank * dv.shape[0] // world
        labels = offset + torch.arange(qv.shape[0], device=qv.device) * batch.group_size
        exclude = false_negative_mask(doc_keys, batch.positive_keys.to(qv.device), labels)
        if self.kind == "colbert":
            return info_nce_from_scores(colbert_scores(qv, dv, qm, dm), labels, self.temperature, exclude)
        if self.matryoshka_dims:
            return matryoshka_info_nce(qv, dv, labels, self.matryoshka_dims, self.temperature, exclude)
        return info_nce(qv, dv, labels, self.temperature, exclude)
