"""Training examples and batches.

Sources (all give `TrainExample`s):
- a BEIR folder: `qrels/<split>.tsv` joined to corpus and queries; one example per (query, document) with
  score > 0;
- a JSONL file, one object per line: `{"query": str, "positive": str, "negatives": [str, ...],
  "scores": [float, ...]}` - `negatives` and `scores` optional (pairs / triples / mined negatives; `scores`
  are teacher scores for [positive, *negatives], used by distillation). `"positives": [...]` gives one
  example per positive. Mined files written by `mining.write_mined_jsonl` are this format.

Batches are query-major: for query i, documents[i*G] is its positive and the next G-1 its hard negatives.
Every document carries a 64-bit key (hash of its text) so the loss can mask in-batch copies of a query's
other positives (false negatives).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data import DataError, document_text, read_beir_folder

__all__ = ["TrainExample", "TrainBatch", "text_key", "load_beir_examples", "load_jsonl_examples", "load_examples",
           "link_positives", "epoch_batches", "num_batches"]


def text_key(text: str) -> int:
    """Stable signed 64-bit key of a text (for duplicate / false-negative detection)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


@dataclass
class TrainExample:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    scores: list[float] | None = None  # teacher scores for [positive, *negatives]
    source: str = ""  # "file:line" for error messages
    positive_keys: frozenset[int] = frozenset()  # keys of every positive of this query (see link_positives)


@dataclass
class TrainBatch:
    queries: list[str]
    documents: list[str]  # len(queries) * group_size, query-major
    group_size: int  # 1 positive + n hard negatives
    doc_keys: torch.Tensor  # (N,) int64
    positive_keys: torch.Tensor  # (B, P) int64: keys of each query's positives (padded by repetition)
    teacher_scores: torch.Tensor | None = None  # (B, group_size) float32

    def __len__(self) -> int:
        return len(self.queries)


# ---------------------------------------------------------------------- loading
def load_beir_examples(path: str | os.PathLike, split: str = "train") -> list[TrainExample]:
    """(query, positive) pairs from a BEIR folder's qrels split (documents with score > 0)."""
    ds = read_beir_folder(path, split)
    qrels_file = Path(path) / "qrels" / f"{split}.tsv"
    out: list[TrainExample] = []
    for qid, judged in ds.qrels.items():
        for did, score in judged.items():
            if score <= 0:
                continue
            if did not in ds.corpus:
                continue  # read_beir_folder already logged missing documents
            out.append(TrainExample(query=ds.queries[qid], positive=document_text(ds.corpus[did]),
                                    source=f"{qrels_file} (query {qid}, doc {did})"))
    if not out:
        raise DataError(f"no positive judgments (score > 0) in split {split!r}", qrels_file)
    return out


def _str_field(obj: dict, name: str, path: Path, line: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"expected a non-empty string, got {value!r}", path, line, name)
    return value


def load_jsonl_examples(path: str | os.PathLike) -> list[TrainExample]:
    """Pairs / triples / mined negatives from JSONL; malformed lines raise DataError with file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    out: list[TrainExample] = []
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataError(f"invalid JSON: {err.msg} (column {err.colno})", path, n) from None
            if not isinstance(obj, dict):
                raise DataError("expected a JSON object", path, n)
            query = _str_field(obj, "query", path, n)
            if "positives" in obj and "positive" not in obj:
                positives = obj["positives"]
                if not isinstance(positives, list) or not positives or \
                        not all(isinstance(p, str) and p.strip() for p in positives):
                    raise DataError("expected a non-empty list of strings", path, n, "positives")
            else:
                positives = [_str_field(obj, "positive", path, n)]
            negatives = obj.get("negatives", [])
            if not isinstance(negatives, list) or not all(isinstance(x, str) and x.strip() for x in negatives):
                raise DataError("expected a list of non-empty strings", path, n, "negatives")
            scores = obj.get("scores")
            if scores is not None:
                if len(positives) != 1:
                    raise DataError("teacher scores need exactly one positive per line", path, n, "scores")
                if not isinstance(scores, list) or len(scores) != 1 + len(negatives) or \
                        not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
                    raise DataError(f"expected {1 + len(negatives)} numbers (positive + each negative)",
                                    path, n, "scores")
                scores = [float(s) for s in scores]
            for pos in positives:
                out.append(TrainExample(query, pos, list(negatives), scores, source=f"{path}:{n}"))
    if not out:
        raise DataError("no training examples", path)
    return out


def load_examples(paths: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train",
                  ) -> list[TrainExample]:
    """Examples from BEIR folders and JSONL files, positives linked across all of them."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise DataError("no training data given")
    out: list[TrainExample] = []
    for p in paths:
        out.extend(load_beir_examples(p, split) if Path(p).is_dir() else load_jsonl_examples(p))
    return link_positives(out)


def link_positives(examples: list[TrainExample]) -> list[TrainExample]:
    """Give every example the keys of all positives of its query (so they are never used as negatives)."""
    by_query: dict[str, set[int]] = {}
    for ex in examples:
        by_query.setdefault(ex.query, set()).add(text_key(ex.positive))
    for ex in examples:
        ex.positive_keys = frozenset(by_query[ex.query])
    return examples


# ---------------------------------------------------------------------- batching
def num_batches(n_examples: int, batch_size: int, world_size: int = 1, drop_last: bool = False) -> int:
    global_bs = batch_size * world_size
    if drop_last or world_size > 1:
        return n_examples // global_bs
    return -(-n_examples // global_bs)


def _pick_negatives(ex: TrainExample, n: int, rng: np.random.Generator, pool: Sequence[str]
                    ) -> tuple[list[str], list[float] | None]:
    """n negatives (and their teacher scores): sampled without replacement when there are enough,
    cycled when there are fewer, random other examples' positives when there are none."""
    if n == 0:
        return [], (None if ex.scores is None else ex.scores[:1])
    if ex.negatives:
        k = len(ex.negatives)
        idx = rng.permutation(k)[:n].tolist() if k >= n else [i % k for i in range(n)]
        given = [ex.negatives[i] for i in idx]
        scores = None if ex.scores is None else [ex.scores[0]] + [ex.scores[1 + i] for i in idx]
        return given, scores
    negs: list[str] = []
    for _ in range(50 * n):
        cand = pool[int(rng.integers(len(pool)))]
        if text_key(cand) not in ex.positive_keys:
            negs.append(cand)
            if len(negs) == n:
                break
    if len(negs) < n:
        raise DataError("cannot find enough negatives: the data has too few distinct documents", ex.source)
    return negs, None


def epoch_batches(examples: Sequence[TrainExample], batch_size: int, n_negatives: int, seed: int, epoch: int,
                  rank: int = 0, world_size: int = 1, drop_last: bool = False, need_scores: bool = False,
                  ) -> list[TrainBatch]:
    """This process's batches for one epoch; a pure function of (seed, epoch), so resuming reproduces them."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(examples))
    n_batches = num_batches(len(examples), batch_size, world_size, drop_last)
    pool = None
    global_bs = batch_size * world_size
    batches: list[TrainBatch] = []
    for b in range(n_batches):
        idx = order[b * global_bs:(b + 1) * global_bs][rank * batch_size:(rank + 1) * batch_size]
        queries, docs, teacher, pos_keys = [], [], [], []
        for i in idx.tolist():
            ex = examples[i]
            ex_rng = np.random.default_rng([seed, epoch, i])
            if n_negatives and not ex.negatives and pool is None:
                pool = [e.positive for e in examples] + [x for e in examples for x in e.negatives]
            negs, scores = _pick_negatives(ex, n_negatives, ex_rng, pool or [])
            if need_scores and scores is None:
                raise DataError("distillation needs teacher scores (a 'scores' list) for every example", ex.source)
            queries.append(ex.query)
            docs.extend([ex.positive, *negs])
            teacher.append(scores)
            pos_keys.append(sorted(ex.positive_keys or {text_key(ex.positive)}))
        width = max(len(k) for k in pos_keys)
        batches.append(TrainBatch(
            queries=queries, documents=docs, group_size=1 + n_negatives,
            doc_keys=torch.tensor([text_key(d) for d in docs], dtype=torch.long),
            positive_keys=torch.tensor([k + [k[0]] * (width - len(k)) for k in pos_keys], dtype=torch.long),
            teacher_scores=torch.tensor(teacher, dtype=torch.float32) if need_scores else None))
    return batches

