"""Retrieval metrics through pytrec_eval (trec_eval's reference implementation), and TREC run files.

Runs are `{query id: {doc id: score}}`. Ranking order everywhere (run files, truncation for MRR, the
evaluator itself) is trec_eval's: score descending, ties broken by doc id in *descending* string order.
That is deterministic and gives the same numbers as running trec_eval / BEIR / MTEB on the same run.

Aggregates are means over every query in the qrels: a judged query missing from the run scores 0
(trec_eval `-c`); run queries without judgments are ignored.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import pytrec_eval

from mbert_retrieval.data import DataError

from ._atomic import atomic_open

__all__ = [
    "DEFAULT_K_VALUES",
    "EvalResult",
    "evaluate_run",
    "ranked",
    "truncate_run",
    "save_trec_run",
    "load_trec_run",
]

DEFAULT_K_VALUES: tuple[int, ...] = (1, 3, 5, 10, 100, 1000)
Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

_MEASURES = {"ndcg_cut": "ndcg_at", "map_cut": "map_at", "recall": "recall_at", "P": "precision_at"}
_BEIR_NAMES = {"ndcg_at": "NDCG", "map_at": "MAP", "recall_at": "Recall", "precision_at": "P", "mrr_at": "MRR"}


@dataclass
class EvalResult:
    """Aggregate scores (MTEB-style keys: `ndcg_at_10`, `recall_at_100`, `map_at_10`, `precision_at_1`,
    `mrr_at_10`), per-query scores with the same keys, and what was evaluated."""

    scores: dict[str, float]
    per_query: dict[str, dict[str, float]]
    k_values: tuple[int, ...]
    mrr_k_values: tuple[int, ...] = (10,)
    num_queries: int = 0
    extra: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        return self.scores[key]

    def beir(self) -> dict[str, float]:
        """BEIR-style flat dict: {"NDCG@10": ..., "MAP@10": ..., "Recall@100": ..., "P@1": ..., "MRR@10": ...}."""
        out = {}
        for key, value in self.scores.items():
            prefix, _, k = key.rpartition("_")
            out[f"{_BEIR_NAMES[prefix]}@{k}"] = value
        return out


def ranked(doc_scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """(doc id, score) pairs in trec_eval order: score descending, then doc id descending."""
    return sorted(((str(d), float(s)) for d, s in doc_scores.items()), key=lambda x: (x[1], x[0]), reverse=True)


def truncate_run(run: Run, k: int) -> dict[str, dict[str, float]]:
    """The top `k` documents of every query (same order as trec_eval uses)."""
    return {str(q): dict(ranked(docs)[:k]) for q, docs in run.items()}


def _clean_run(run: Run, qrels: Mapping[str, dict], ignore_identical_ids: bool) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for qid, docs in run.items():
        qid = str(qid)
        if qid not in qrels:
            continue
        clean = {}
        for did, score in docs.items():
            did, score = str(did), float(score)
            if math.isnan(score):
                raise ValueError(f"run has a NaN score for query {qid!r}, document {did!r}")
            if ignore_identical_ids and did == qid:
                continue
            clean[did] = score
        if clean:
            out[qid] = clean
    return out


def evaluate_run(
    qrels: Qrels,
    run: Run,
    k_values: Iterable[int] = DEFAULT_K_VALUES,
    mrr_k_values: Iterable[int] = (10,),
    ignore_identical_ids: bool = False,
) -> EvalResult:
    """nDCG@k, MAP@k, Recall@k, P@k (pytrec_eval `ndcg_cut`, `map_cut`, `recall`, `P`) and MRR@k
    (pytrec_eval `recip_rank` on the run truncated to k), aggregate and per query.

    `ignore_identical_ids` drops documents whose id equals the query id (BEIR's default for
    datasets such as Quora/ArguAna where queries are also in the corpus)."""
    k_values = tuple(sorted({int(k) for k in k_values}))
    mrr_k_values = tuple(sorted({int(k) for k in mrr_k_values}))
    if not k_values or min(k_values) < 1 or (mrr_k_values and min(mrr_k_values) < 1):
        raise ValueError("k values must be positive integers")
    judged = {str(q): {str(d): int(s) for d, s in docs.items()} for q, docs in qrels.items() if docs}
    if not judged:
        raise ValueError("qrels hold no judged query")
    clean = _clean_run(run, judged, ignore_identical_ids)
    ks = ",".join(map(str, k_values))
    evaluator = pytrec_eval.RelevanceEvaluator(judged, {f"{m}.{ks}" for m in _MEASURES})
    raw = evaluator.evaluate(clean) if clean else {}
    rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"})
    raw_rr = {k: (rr.evaluate(truncate_run(clean, k)) if clean else {}) for k in mrr_k_values}

    keys = [f"{_MEASURES[m]}_{k}" for m in _MEASURES for k in k_values] + [f"mrr_at_{k}" for k in mrr_k_values]
    per_query: dict[str, dict[str, float]] = {}
    for qid in judged:
        scores = dict.fromkeys(keys, 0.0)
        if qid in raw:
            for m, name in _MEASURES.items():
                for k in k_values:
                    scores[f"{name}_{k}"] = float(raw[qid][f"{m}_{k}"])
        for k in mrr_k_values:
            if qid in raw_rr[k]:
                scores[f"mrr_at_{k}"] = float(raw_rr[k][qid]["recip_rank"])
        per_query[qid] = scores
    n = len(per_query)
    aggregate = {key: math.fsum(per_query[q][key] for q in sorted(per_query)) / n for key in keys}
    return EvalResult(scores=aggregate, per_query=per_query, k_values=k_values, mrr_k_values=mrr_k_values,
                      num_queries=n, extra={"queries_without_results": sum(q not in clean for q in judged)})


# -------------------------------------------------------------------------------------------- run files
def save_trec_run(run: Run, path: str | os.PathLike, tag: str = "mbert_retrieval", top_k: int | None = None) -> Path:
    """Write a TREC run file (`qid Q0 docid rank score tag`), documents in trec_eval order, atomically.
    Scores are written with full float precision so `load_trec_run` gives the same run back."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be a non-empty word without whitespace, got {tag!r}")
    with atomic_open(path) as fh:
        for qid, docs in run.items():
            qid = str(qid)
            if not qid or any(c.isspace() for c in qid):
                raise ValueError(f"query id {qid!r} cannot be written to a TREC run file (whitespace)")
            items = ranked(docs)
            for rank, (did, score) in enumerate(items[:top_k] if top_k else items, start=1):
                if not did or any(c.isspace() for c in did):
                    raise ValueError(f"document id {did!r} cannot be written to a TREC run file (whitespace)")
                fh.write(f"{qid} Q0 {did} {rank} {score!r} {tag}\n")
    return Path(path)


def load_trec_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run file into {qid: {docid: score}}; malformed lines raise DataError (file + line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("run file not found", path)
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise DataError(f"expected 6 fields (qid Q0 docid rank score tag), got {len(parts)}", path, n)
            qid, _, did, rank, score, _ = parts
            try:
                value = float(score)
            except ValueError:
                raise DataError(f"score must be a number, got {score!r}", path, n, "score") from None
            if math.isnan(value):
                raise DataError("score is NaN", path, n, "score")
            docs = run.setdefault(qid, {})
            if did in docs:
                raise DataError(f"document {did!r} listed twice for query {qid!r}", path, n, "docid")
            docs[did] = value
    return run
