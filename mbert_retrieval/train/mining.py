"""Hard-negative mining: retrieve with a model, skip the positives, take negatives from a rank window,
optionally drop likely false negatives with a cross-encoder, and write training JSONL.

Ranks are 0-based positions in the model's full ranking (positives included): `range_min=10, range_max=100`
considers ranking[10:100] and skips every positive in it. Retrieval uses the project's indexes: an existing
index folder (`IndexSearcher`, e.g. a PLAID or HNSW index of the corpus) or a temporary flat one for exact
search (`ExactSearcher`); any other ranker plugs in as `search(query_texts, k) -> (scores, indices)`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from .data import text_key

__all__ = ["MinedExample", "IndexSearcher", "ExactSearcher", "SearchFn", "mine_hard_negatives", "write_mined_jsonl", "mine_beir"]

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


class IndexSearcher:
    """Top-k over one of the project's index folders, as document positions in `doc_ids` order.

    The index's own search (FAISS, PLAID or exact MaxSim) ranks; `model` encodes the queries. Documents of
    the index that are not in `doc_ids` are skipped; rows shorter than k are padded with index -1 / -inf.
    """

    def __init__(self, index: Any, doc_ids: Sequence[str], model: Any, **search_params: Any):
        from ..doc_encoder import DocumentEncoder

        self.index = index
        self.encoder = DocumentEncoder(model)
        self.positions = {str(d): i for i, d in enumerate(doc_ids)}
        self.search_params = search_params

    def __len__(self) -> int:
        return len(self.positions)

    def __call__(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search(queries, k)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, document positions), each (Q, min(k, n_docs)), best first."""
        k = min(k, len(self))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        idx = np.full((len(queries), k), -1, dtype=np.int64)
        for row, hits in enumerate(self.index.search(list(queries), k=k, encoder=self.encoder, **self.search_params)):
            kept = [(h.score, self.positions[h.doc_id]) for h in hits if h.doc_id in self.positions][:k]
            for col, (score, pos) in enumerate(kept):
                scores[row, col], idx[row, col] = score, pos
        return scores, idx

    def close(self) -> None:
        self.index.close()


class ExactSearcher(IndexSearcher):
    """Exact top-k (dense inner product or ColBERT MaxSim) over `documents`: a flat index of the project built
    in a temporary folder (removed by `close()` or at exit) — the same search code the index folders use."""

    def __init__(self, model: Any, documents: Sequence[str], show_progress: bool = True, chunk_size: int = 4096):
        from ..doc_encoder import build_index

        self._tmp = tempfile.TemporaryDirectory(prefix="mbret-mine-")
        docs = ({"id": str(i), "text": t} for i, t in enumerate(documents))
        kind = getattr(model, "kind", "dense")
        index = build_index(Path(self._tmp.name) / "index", docs, kind, "flat", model, show_progress=show_progress, chunk_size=chunk_size)
        super().__init__(index, [str(i) for i in range(len(documents))], model)

    def close(self) -> None:
        super().close()
        self._tmp.cleanup()


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
        retr = {doc_ids[j]: float(s) for s, j in zip(scores[row], indices[row]) if j >= 0}
        window = [doc_ids[j] for j in indices[row][range_min:range_max] if j >= 0]
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
                    teacher[0] = min([*teacher[1:], *retr.values()])
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
              show_progress: bool = True, index: str | os.PathLike | None = None,
              search_params: Mapping[str, Any] | None = None, **kwargs) -> Path:
    """Mine negatives for a BEIR split with `model` (BiEncoder / ColBERT, or a path loaded as dense) and
    write the JSONL; `kwargs` go to `mine_hard_negatives`. `index`: an index folder of this corpus built with
    `model` (e.g. `mbret index DATASET DIR`); without it, exact search over a temporary flat index."""
    from ..data import document_text, read_beir_folder

    if isinstance(model, (str, os.PathLike)):
        from ..biencoder import BiEncoder

        model = BiEncoder.from_pretrained(str(model))
    ds = read_beir_folder(beir_dir, split)
    corpus = {d: document_text(doc) for d, doc in ds.corpus.items()}
    if index is not None:
        from ..index import Index

        searcher: IndexSearcher = IndexSearcher(Index.open(Path(index), model), list(corpus), model, **dict(search_params or {}))
        missing = len(corpus) - len(searcher.index)
        if missing > 0:
            searcher.close()
            raise ValueError(f"{index} holds {len(searcher.index)} documents, fewer than the {len(corpus)} of "
                             f"{beir_dir}: build it from the same corpus")
    else:
        searcher = ExactSearcher(model, list(corpus.values()), show_progress=show_progress)
    try:
        mined = mine_hard_negatives(ds.queries, corpus, ds.qrels, searcher, show_progress=show_progress, **kwargs)
    finally:
        searcher.close()
    return write_mined_jsonl(mined, output)
