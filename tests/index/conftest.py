"""Small deterministic fake models and synthetic data for the index tests."""

from __future__ import annotations

import hashlib
import os

# torch and faiss each bring an OpenMP runtime; spinning idle workers of one starve the other on a
# small shared machine (10x slower FAISS training after a torch op). Must be set before they load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mbert_retrieval.doc_encoder import DocumentEncoder  # noqa: E402
from mbert_retrieval.index.base import Index  # noqa: E402


def word_vector(word: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class FakeDenseModel:
    """Bag of hashed random word vectors, L2-normalised. `fail_on_call`: raise on that encode call (1-based)."""

    kind = "dense"

    def __init__(self, dim: int = 32, model_id: str = "fake/dense", revision: str | None = "r1", fail_on_call: int | None = None):
        self.dim, self.model_id, self.revision = dim, model_id, revision
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.encoded = 0

    def _encode(self, texts):
        return np.stack([_normalize(sum(word_vector(w, self.dim) for w in t.lower().split()) + 1e-3) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_documents(self, texts, show_progress=False):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash while encoding")
        self.encoded += len(texts)
        return self._encode(texts)

    def encode_queries(self, texts, show_progress=False):
        return self._encode(texts)


class FakeColbertModel(FakeDenseModel):
    """One hashed unit vector per word (token)."""

    kind = "colbert"

    def __init__(self, dim: int = 32, model_id: str = "fake/colbert", **kw):
        super().__init__(dim=dim, model_id=model_id, **kw)

    def _encode(self, texts):
        return [np.stack([word_vector(w, self.dim) for w in t.lower().split()]) if t.split() else np.zeros((0, self.dim), np.float32) for t in texts]


VOCAB = [f"w{i}" for i in range(300)]


def make_docs(n: int, seed: int = 0, words: int = 8) -> list[dict]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        topic = i % 10
        toks = [VOCAB[topic * 30 + j] for j in rng.integers(0, 30, size=words)]
        docs.append({
            "id": f"d{i}", "text": " ".join(toks), "title": f"title {i}" if i % 3 == 0 else None,
            "metadata": {"year": 2015 + i % 10, "lang": "en" if i % 2 else "de", "tags": ["odd" if i % 2 else "even"]},
        })  # fmt: skip
    return docs


def clustered(n: int, dim: int, n_clusters: int = 20, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """Unit vectors around random cluster centres (realistic for ANN recall tests)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, dim))
    return _normalize(x.astype(np.float32))


def clustered_tokens(n_docs: int, dim: int, seed: int = 0, n_topics: int = 40, tokens: tuple[int, int] = (8, 24)):
    """ColBERT-like docs: each doc mixes tokens from a couple of topics (token clusters)."""
    rng = np.random.default_rng(seed)
    centres = _normalize(rng.standard_normal((n_topics, dim)).astype(np.float32))
    docs = []
    for _ in range(n_docs):
        topics = rng.choice(n_topics, size=2, replace=False)
        n = int(rng.integers(*tokens))
        t = centres[rng.choice(topics, size=n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
        docs.append(_normalize(t))
    return docs


@pytest.fixture
def dense_model():
    return FakeDenseModel()


@pytest.fixture
def colbert_model():
    return FakeColbertModel()


@pytest.fixture(autouse=True, scope="package")
def _one_faiss_thread():
    """OpenMP spinning on a shared 2-core machine makes FAISS training ~10x slower: use one thread."""
    import faiss

    import torch

    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before[0])
    torch.set_num_threads(before[1])


@pytest.fixture(autouse=True)
def _tmp_caches(tmp_path, monkeypatch):
    for var in ("HF_HOME", "XDG_CACHE_HOME", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path / ".cache"))


class TextIndex(Index):
    """The index tests are written with texts; the index holds no model. This adapter keeps a
    `DocumentEncoder` of the (fake) model beside the index, as the `Retriever` does, and passes it to every
    write without vectors and every text search."""

    _test_encoder: DocumentEncoder | None = None

    @classmethod
    def create(cls, path, kind, index_type, model=None, **kw):
        index = super().create(path, kind, index_type, model, **kw)
        index._test_encoder = None if model is None else DocumentEncoder(model)
        return index

    @classmethod
    def open(cls, path, model=None, **kw):
        index = super().open(path, model, **kw)
        index._test_encoder = None if model is None else DocumentEncoder(model)
        return index

    @classmethod
    def build(cls, path, docs, kind, index_type, model=None, **kw):
        if model is not None and kw.get("vectors") is None:
            kw.setdefault("encoder", DocumentEncoder(model))
        return super().build(path, docs, kind, index_type, model, **kw)

    def add(self, docs, *, vectors=None, encoder=None, **kw):
        return super().add(docs, vectors=vectors, encoder=encoder or (None if vectors is not None else self._test_encoder), **kw)

    def update(self, docs, *, vectors=None, encoder=None, **kw):
        return super().update(docs, vectors=vectors, encoder=encoder or (None if vectors is not None else self._test_encoder), **kw)

    def search(self, queries, k=10, filter=None, *, encoder=None, **params):
        return super().search(queries, k, filter, encoder=encoder or self._test_encoder, **params)
