"""Fixtures for the evaluation tests: tiny deterministic fake models and a small slice of real SciFact."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mbert_retrieval.data import BeirDataset, read_beir_folder

_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and are as at be by for from has have in is it its of on or that the this to was were "
                  "with we our not no".split())


def tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


def _h(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


class HashedBowModel:
    """Dense 'model': signed feature hashing of words with log term frequency, L2-normalised.
    Deterministic and gives real (lexical) rankings. Records how many documents each call encodes;
    `fail_after=n` raises on the (n+1)-th encode_documents call (simulates an interrupted run)."""

    kind = "dense"

    def __init__(self, dim: int = 2048, model_id: str = "test/hashed-bow", revision: str | None = "r1",
                 fail_after: int | None = None):
        self.dim, self.model_id, self.revision, self.fail_after = dim, model_id, revision, fail_after
        self.document_calls: list[int] = []

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for tok, n in Counter(tokens(text)).items():
            h = _h(tok)
            v[h % self.dim] += (1.0 if (h >> 40) & 1 else -1.0) * (1.0 + math.log(n))
        norm = np.linalg.norm(v)
        return v / norm if norm else v

    def encode_queries(self, texts, show_progress=False):
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_documents(self, texts, show_progress=False):
        if self.fail_after is not None and len(self.document_calls) >= self.fail_after:
            raise RuntimeError("simulated interruption")
        self.document_calls.append(len(texts))
        return self.encode_queries(texts)


class RandomModel(HashedBowModel):
    """Bag-of-random baseline: a random unit vector per text (seeded by the text, so deterministic)."""

    def __init__(self, dim: int = 64):
        super().__init__(dim, model_id="test/random")

    def _vec(self, text: str) -> np.ndarray:
        v = np.random.default_rng(_h(text)).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)


class HashedTokenColbert:
    """ColBERT 'model': one pseudo-random unit vector per word (seeded by the word), so MaxSim ~ soft
    word overlap. Queries up to 32 tokens, documents up to 128."""

    kind = "colbert"

    def __init__(self, dim: int = 48, model_id: str = "test/hashed-colbert"):
        self.dim, self.model_id, self.revision = dim, model_id, None
        self._cache: dict[str, np.ndarray] = {}

    def _tok(self, t: str) -> np.ndarray:
        if t not in self._cache:
            v = np.random.default_rng(_h(t)).standard_normal(self.dim).astype(np.float32)
            self._cache[t] = v / np.linalg.norm(v)
        return self._cache[t]

    def _mat(self, text: str, limit: int) -> np.ndarray:
        toks = tokens(text)[:limit]
        return np.stack([self._tok(t) for t in toks]) if toks else np.zeros((0, self.dim), np.float32)

    def encode_queries(self, texts, show_progress=False):
        return [self._mat(t, 32) for t in texts]

    def encode_documents(self, texts, show_progress=False):
        return [self._mat(t, 128) for t in texts]


@pytest.fixture(scope="session")
def scifact_slice(shared_data) -> BeirDataset:
    """40 SciFact test queries; corpus = their relevant documents + the first 400 corpus documents."""
    folder = shared_data / "scifact"
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"scifact not found at {folder}")
    full = read_beir_folder(folder, "test")
    qids = list(full.qrels)[:40]
    keep = set(list(full.corpus)[:400]) | {d for q in qids for d in full.qrels[q]}
    corpus = {d: doc for d, doc in full.corpus.items() if d in keep}
    return BeirDataset(corpus=corpus, queries={q: full.queries[q] for q in qids},
                       qrels={q: full.qrels[q] for q in qids}, name="scifact-slice")


@pytest.fixture
def fake_models():
    return {"bow": HashedBowModel, "random": RandomModel, "colbert": HashedTokenColbert}


def write_toy_beir(root: Path, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
                   split: str = "test") -> Path:
    import json

    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                               for d, t in corpus.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (root / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, ds in qrels.items() for d, s in ds.items()))
    return root


@pytest.fixture
def make_toy_beir():
    """The `write_toy_beir(root, corpus, queries, qrels, split="test")` helper."""
    return write_toy_beir


@pytest.fixture
def toy_beir(tmp_path) -> Path:
    return write_toy_beir(
        tmp_path / "toy",
        corpus={"d1": "red apples and green pears", "d2": "fast cars on the road", "d3": "apples grow on trees",
                "d4": "python code for sorting lists"},
        queries={"q1": "apples", "q2": "sorting lists in python", "q3": "unjudged query"},
        qrels={"q1": {"d1": 1, "d3": 1}, "q2": {"d4": 1}})
