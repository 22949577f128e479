"""Hard-negative mining: retrieve with a model, skip the positives, take negatives from a rank window,
optionally drop likely false negatives with a cross-encoder, and write training JSONL.

Ranks are 0-based positions in the model's full ranking (positives included): `range_min=10, range_max=100`
considers ranking[10:100] and skips every positive in it. Exact search: dense inner products, or MaxSim
(`maxsim`) for ColBERT; any other index can be plugged in as `search(query_texts, k) -> (scores, indices)`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..maxsim import maxsim, pad_token_vectors
from .data import text_key

__all__ = ["MinedExample", "ExactSearcher", "SearchFn", "mine_hard_negatives", "write_mined_jsonl", "mine_beir"]

SearchFn = Callable[[Sequence[str], int], tuple[np.ndarray, np.ndarray]]  # (Q, k) scores, (Q, k) doc positions


@dataclass
class MinedExample:
    query_id: str
    query: str
    positive_id: str
    positive: str
    negative_ids: list[str]
    negatives: list[str]
    scores: list[float] | None = None  # teacher scores for [positive, *negatives]


class ExactSearcher:
    """Brute-force top-k over a corpus for a dense or ColBERT model; the corpus is encoded once."""

    def __init__(self, model: Any, documents: Sequence[str], show_progress: bool = True,
                 doc_chunk: int = 256, query_chunk: int = 64):
        self.model = model
        self.kind = getattr(model, "kind", "dense")
        self.doc_chunk, self.query_chunk = doc_chunk, query_chunk
        self.show_progress = show_progress
        emb = model.encode_documents(list(documents), show_progress=show_progress)
        self.n_docs = len(emb)
        if self.kind == "dense":
            self.documents = torch.from_numpy(np.asarray(emb, dtype=np.float32))
        else:  # padded once, per chunk of documents
            self.doc_chunks = [pad_token_vectors([torch.from_numpy(np.asarray(e, dtype=np.float32))
                                                  for e in emb[s:s + doc_chunk]]) for s in range(0, len(emb), doc_chunk)]

    def __len__(self) -> int:
        return self.n_docs

    def __call__(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search(queries, k)

    @torch.no_grad()
    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, document positions), each (Q, min(k, n_docs)), best first."""
        k = min(k, len(self))
        q = self.model.encode_queries(list(queries), show_progress=self.show_progress)
        if self.kind == "dense":
            scores = torch.from_numpy(np.asarray(q, dtype=np.float32)) @ self.documents.T
            top = torch.topk(scores, k, dim=1)
            return top.values.numpy(), top.indices.numpy()
        out_s, out_i = [], []
        bar = tqdm(total=len(q), desc="maxsim search", unit="query", disable=not self.show_progress)
        for qs in range(0, len(q), self.query_chunk):
            qp, qm = pad_token_vectors([torch.from_numpy(np.asarray(x, dtype=np.float32))
                                        for x in q[qs:qs + self.query_chunk]])
            rows = [maxsim(qp, dp, qm, dm, doc_chunk_size=64) for dp, dm in self.doc_chunks]
            top = torch.topk(torch.cat(rows, dim=1), k, dim=1)
            out_s.append(top.values), out_i.append(top.indices)
            bar.update(qp.shape[0])
        bar.close()
        return torch.cat(out_s).numpy(), torch.cat(out_i).numpy()


def _cross_encoder(ce: Any) -> Any:
    if isinstance(ce, (str, os.PathLike)):
        from sentence_transformers import CrossEncoder

        return CrossEncoder(str(ce))
    return ce


def mine_hard_negatives(
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    search: SearchFn,
    num_negatives: int = 8,
    range_min: int = 10,
    range_max: int = 100,
    sampling: str = "top",
    seed: int = 0,
    cross_encoder: Any = None,
    ce_max_ratio: float = 0.95,
    ce_batch_size: int = 32,
    teacher_scores: str = "none",
    show_progress: bool = True,
) -> list[MinedExample]:
    """One example per (query, positive) with up to `num_negatives` negatives from ranking[range_min:range_max].

    `search` ranks over `list(corpus)` positions (e.g. an `ExactSearcher` built on `list(corpus.values())`).
    sampling: "top" (the best-ranked candidates) or "random" (a seeded sample of the window).
    cross_encoder (path or object with `predict(pairs)`): a candidate is dropped when its score exceeds
    `ce_max_ratio` x the lowest positive's score (likely an unlabelled positive); scores should be
    non-negative (sentence-transformers applies a sigmoid to 1-label cross-encoders).
    teacher_scores: "none" | "retriever" | "cross_encoder": write `scores` for [positive, *negatives].
    """
    if not 0 <= range_min < range_max:
        raise ValueError(f"need 0 <= range_min < range_max, got {range_min}, {range_max}")
    if sampling not in ("top", "random"):
        raise ValueError(f"sampling must be 'top' or 'random', got {sampling!r}")
    if teacher_scores not in ("none", "retriever", "cross_encoder"):
        raise ValueError(f"teacher_scores must be none, retriever or cross_encoder, got {teacher_scores!r}")
    if teacher_scores == "cross_encoder" and cross_encoder is None:
        raise ValueError("teacher_scores='cross_encoder' needs a cross_encoder")
    ce = _cross_encoder(cross_encoder) if cross_encoder is not None else None
    doc_ids = list(corpus)
    qids = [q for q in qrels if q in queries and any(s > 0 and d in corpus for d, s in qrels[q].items())]
    scores, indices = search([queries[q] for q in qids], range_max)
    rng = np.random.default_rng(seed)
    out: list[MinedExample] = []
    for row, qid in enumerate(tqdm(qids, desc="mine negatives", unit="query", disable=not show_progress)):
        positives = [d for d, s in qrels[qid].items() if s > 0 and d in corpus]
        pos_keys = {text_key(corpus[d]) for d in positives}
        retr = {doc_ids[j]: float(s) for s, j in zip(scores[row], indices[row])}
        window = [doc_ids[j] for j in indices[row][range_min:range_max]]
        cands = [d for d in window if d not in positives and text_key(corpus[d]) not in pos_keys]
        ce_scores: dict[str, float] = {}
        if ce is not None and cands:
            pairs = [(queries[qid], corpus[d]) for d in positives + cands]
            values = np.asarray(ce.predict(pairs, batch_size=ce_batch_size, show_progress_bar=False), dtype=float)
            ce_scores = dict(zip(positives + cands, values.tolist()))
            limit = ce_max_ratio * min(ce_scores[d] for d in positives)
            cands = [d for d in cands if ce_scores[d] <= limit]
        if sampling == "random" and len(cands) > num_negatives:
            cands = [cands[i] for i in sorted(rng.choice(len(cands), num_negatives, replace=False))]
        negs = cands[:num_negatives]
        for pid in positives:
            teacher = None
            if teacher_scores == "retriever":
                teacher = [retr.get(pid, float("nan"))] + [retr[d] for d in negs]
                if np.isnan(teacher[0]):  # positive ranked outside the search depth: score it as the lowest
                    teacher[0] = min([*teacher[1:], float(scores[row][-1])])
            elif teacher_scores == "cross_encoder":
                teacher = [ce_scores[pid]] + [ce_scores[d] for d in negs]
            out.append(MinedExample(qid, queries[qid], pid, corpus[pid], list(negs), [corpus[d] for d in negs],
                                    teacher))
    return out


def write_mined_jsonl(examples: Sequence[MinedExample], path: str | os.PathLike) -> Path:
    """JSONL readable by `train.data.load_jsonl_examples` (query, positive, negatives[, scores] + ids)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for ex in examples:
            row = asdict(ex)
            if row["scores"] is None:
                del row["scores"]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def mine_beir(model: Any, beir_dir: str | os.PathLike, output: str | os.PathLike, split: str = "train",
              show_progress: bool = True, **kwargs) -> Path:
    """Mine negatives for a BEIR split with `model` (BiEncoder / ColBERT, or a path loaded as dense) and
    write the JSONL; `kwargs` go to `mine_hard_negatives`."""
    from ..data import document_text, read_beir_folder

    if isinstance(model, (str, os.PathLike)):
        from ..biencoder import BiEncoder

        model = BiEncoder.from_pretrained(str(model))
    ds = read_beir_folder(beir_dir, split)
    corpus = {d: document_text(doc) for d, doc in ds.corpus.items()}
    searcher = ExactSearcher(model, list(corpus.values()), show_progress=show_progress)
    mined = mine_hard_negatives(ds.queries, corpus, ds.qrels, searcher, show_progress=show_progress, **kwargs)
    return write_mined_jsonl(mined, output)
