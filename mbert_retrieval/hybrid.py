"""Lexical (BM25) retrieval with `bm25s` and reciprocal rank fusion with dense / ColBERT results.

Hybrid indexes keep BM25 in their document store (FTS5, `mbert_retrieval.index.lexical`, updated with every
commit); `BM25Index` is the fallback: built in memory for a hybrid search of an index without that table
(never written by a read), and on disk in `<index>/bm25/` for folders of older versions (until their next
write command moves them to FTS5) and where sqlite3 lacks FTS5. Everything on disk is numpy
`.npy` arrays written with `allow_pickle=False` and JSON (bm25s' own files, plus `doc_ids.json` mapping
BM25 row -> document id and `bm25.json` with our settings); nothing is unpickled when loading.
`bm25.json` also records a `binding` (see `Retriever`): which index, and which state of its documents,
the BM25 index was built from, so a stale BM25 folder or one copied from another index is never served.

    >>> bm25 = BM25Index.build(["a", "b"], ["the cat sat", "dogs bark"])
    >>> bm25.search(["cat"], k=5)
    [[('a', 0.46...)]]
    >>> rrf([["a", "b"], ["b", "c"]])          # [('b', 0.0325...), ('a', 0.0164), ('c', 0.0161)]
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["BM25Index", "rrf", "RRF_K", "BM25_DIRNAME"]

RRF_K = 60
BM25_DIRNAME = "bm25"
_META = "bm25.json"
_IDS = "doc_ids.json"
_FORMAT = 1


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K, weights: Sequence[float] | None = None,
        limit: int | None = None) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks starting at 1.

    `rankings`: ranked lists of ids (best first; repeated ids inside one list count once, at their best rank).
    Returns (id, fused score) best first; ties keep the order of first appearance. `limit` cuts the list."""
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[str, float] = {}
    for i, ranking in enumerate(rankings):
        w = 1.0 if weights is None else float(weights[i])
        seen: set[str] = set()
        for rank, doc_id in enumerate(ranking, start=1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            scores[doc_id] = scores.get(doc_id, 0.0) + w / (k + rank)
    order = sorted(scores.items(), key=lambda item: -item[1])  # stable: first appearance wins ties
    return order if limit is None else order[:limit]


class BM25Index:
    """A bm25s BM25 index over documents identified by string ids."""

    def __init__(self, model, doc_ids: list[str], config: dict):
        self.model = model  # bm25s.BM25, or None for an empty corpus
        self.doc_ids = doc_ids
        self.config = config
        self._row = {d: i for i, d in enumerate(doc_ids)}

    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def binding(self) -> dict[str, Any] | None:
        """What the index was built from (set by the caller at build time; None: unknown)."""
        return self.config.get("binding")

    # ------------------------------------------------------------------ build / save / load
    @classmethod
    def build(cls, doc_ids: Iterable[str], texts: Iterable[str], k1: float = 1.5, b: float = 0.75,
              method: str = "lucene", stopwords: str | None = "en", stemmer: str | None = None,
              binding: Mapping[str, Any] | None = None) -> BM25Index:
        """Index `texts` (same order as `doc_ids`). `stemmer`: a PyStemmer language (e.g. "english"), optional.
        `binding`: JSON-able description of the source (which index, which document state), saved with it."""
        bm25s = _bm25s()

        doc_ids, texts = list(doc_ids), list(texts)
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} ids for {len(texts)} texts")
        if len(set(doc_ids)) != len(doc_ids):
            raise ValueError("duplicate document ids given to BM25Index.build")
        config = {"format": _FORMAT, "k1": k1, "b": b, "method": method, "stopwords": stopwords,
                  "stemmer": stemmer, "n_docs": len(doc_ids), "binding": dict(binding) if binding else None}
        if not doc_ids:
            return cls(None, [], config)
        tokens = bm25s.tokenize(texts, stopwords=stopwords, stemmer=_stemmer(stemmer), show_progress=False)
        model = bm25s.BM25(k1=k1, b=b, method=method)
        model.index(tokens, show_progress=False)
        return cls(model, doc_ids, config)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write to `directory` (replaced as a whole: written to a temporary sibling, then renamed)."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}-new-{uuid.uuid4().hex[:8]}")  # not the index's ".tmp-" prefix
        tmp.mkdir()
        try:
            if self.model is not None:
                self.model.save(str(tmp), allow_pickle=False, show_progress=False)
            (tmp / _IDS).write_text(json.dumps(self.doc_ids, ensure_ascii=False), encoding="utf-8")
            (tmp / _META).write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
            old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @staticmethod
    def exists(directory: str | os.PathLike) -> bool:
        return (Path(directory) / _META).is_file() and (Path(directory) / _IDS).is_file()

    @staticmethod
    def read_config(directory: str | os.PathLike) -> dict[str, Any]:
        """The settings file alone (`binding`, `n_docs`, ...), without loading the index. Raises
        ValueError when it is damaged, FileNotFoundError when absent."""
        path = Path(directory) / _META
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: corrupt BM25 index file ({err})") from err
        if not isinstance(config, dict):
            raise ValueError(f"{path}: corrupt BM25 index file (not a JSON object)")
        return config

    @classmethod
    def load(cls, directory: str | os.PathLike) -> BM25Index:
        bm25s = _bm25s()

        directory = Path(directory)
        try:
            config = json.loads((directory / _META).read_text(encoding="utf-8"))
            doc_ids = json.loads((directory / _IDS).read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"no BM25 index in {directory}: build one with hybrid=True") from err
        except json.JSONDecodeError as err:
            raise ValueError(f"{directory}: corrupt BM25 index file ({err})") from err
        if not isinstance(config, dict) or config.get("format") != _FORMAT or not isinstance(doc_ids, list):
            raise ValueError(f"{directory}: unsupported BM25 index (format {config.get('format')!r})")
        if config.get("stemmer"):
            _stemmer(config["stemmer"])  # fail early when PyStemmer is missing
        model = bm25s.BM25.load(str(directory), allow_pickle=False, mmap=False) if doc_ids else None
        if model is not None and int(model.scores["num_docs"]) != len(doc_ids):
            raise ValueError(f"{directory}: {model.scores['num_docs']} BM25 rows but {len(doc_ids)} document ids")
        return cls(model, doc_ids, config)

    # ------------------------------------------------------------------ search
    def search(self, queries: Sequence[str], k: int = 10, allowed: Iterable[str] | None = None,
               ) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, BM25 score) per query; documents sharing no term with the query are left out.
        `allowed`: restrict to these document ids (e.g. the ones matching a metadata filter)."""
        bm25s = _bm25s()

        if isinstance(queries, str):
            queries = [queries]
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.model is None or not queries:
            return [[] for _ in queries]
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self.doc_ids), dtype=np.float32)
            rows = [self._row[d] for d in allowed if d in self._row]
            if not rows:
                return [[] for _ in queries]
            mask[rows] = 1.0
        tokens = bm25s.tokenize(list(queries), stopwords=self.config.get("stopwords"),
                                stemmer=_stemmer(self.config.get("stemmer")), return_ids=False, show_progress=False)
        kk = min(k, len(self.doc_ids))
        rows, scores = self.model.retrieve(tokens, k=kk, show_progress=False, n_threads=1, weight_mask=mask)
        return [[(self.doc_ids[int(r)], float(s)) for r, s in zip(row, sc) if s > 0] for row, sc in zip(rows, scores)]


def _bm25s():
    """Import bm25s, whose logger is set to DEBUG on import (it logs every index build): quiet it to WARNING."""
    import bm25s

    log = logging.getLogger("bm25s")
    if log.level == logging.DEBUG:
        log.setLevel(logging.WARNING)
    return bm25s


def _stemmer(name: str | None):
    if not name:
        return None
    try:
        import Stemmer
    except ImportError as err:
        raise RuntimeError(f"BM25 stemming ({name!r}) needs the PyStemmer package: pip install PyStemmer") from err
    return Stemmer.Stemmer(name)  # bm25s.tokenize calls its stemWords on the vocabulary
