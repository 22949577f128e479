"""Fixtures for the distributed tests: a tiny corpus, tiny real models, a 2-CPU local Ray cluster."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch + faiss OpenMP runtimes on a small shared machine

import numpy as np  # noqa: E402
import pytest  # noqa: E402

WORDS = ("retrieval model token vector index search query document encoder attention shard ray merge "
         "corpus dense late interaction score rank filter cluster worker").split()


def make_docs(n: int = 24, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"d{i:03d}", "title": f"title {i}" if i % 3 else "",
             "text": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))),
             "metadata": {"lang": "en" if i % 2 else "de", "year": 2000 + i % 7}} for i in range(n)]


@pytest.fixture(scope="session")
def docs() -> list[dict]:
    return make_docs()


@pytest.fixture(scope="session")
def dense_model(tiny_modernbert):
    from mbert_retrieval.hub import load_model

    return load_model(tiny_modernbert, kind="dense")


@pytest.fixture(scope="session")
def colbert_model(tiny_modernbert):
    from mbert_retrieval.hub import load_model

    return load_model(tiny_modernbert, kind="colbert", dim=16)


class CountingModel:
    """Wraps a model and counts `encode_documents` calls (resume tests)."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, 0
        self.kind, self.model_id, self.dim = model.kind, model.model_id, model.dim

    def encode_documents(self, texts, show_progress=False):
        self.calls += 1
        return self.model.encode_documents(texts)

    def encode_queries(self, texts, show_progress=False):
        return self.model.encode_queries(texts)


@pytest.fixture
def counting():
    return CountingModel


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with 2 CPUs (skipped when Ray is not installed); shut down at the end of the session."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mbert-retrieval[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'mbert-retrieval[ray]')")
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short path: Ray's unix sockets live under it
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                                       "OMP_NUM_THREADS": "1"}})
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


class FakeModel:
    """A deterministic stand-in encoder (no torch): vectors from a hash of each text, so that tests can build
    indexes big enough for IVF-PQ / PLAID training in a second. colbert: one token vector per word (max 12)."""

    def __init__(self, kind: str = "dense", dim: int = 16) -> None:
        self.kind, self.dim, self.model_id = kind, dim, f"fake/{kind}-{dim}"
        self.calls = 0

    def _rows(self, text: str, n: int) -> np.ndarray:
        import hashlib

        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        x = np.random.default_rng(seed).standard_normal((n, self.dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def _encode(self, texts):
        if self.kind == "dense":
            return np.stack([self._rows(t, 1)[0] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        return [self._rows(t, max(1, min(12, len(t.split())))) for t in texts]

    def encode_documents(self, texts, show_progress=False):
        self.calls += 1
        return self._encode(list(texts))

    def encode_queries(self, texts, show_progress=False):
        return self._encode([f"query: {t}" for t in texts])


@pytest.fixture
def fake_model():
    return FakeModel


@pytest.fixture
def doc_maker():
    """`make_docs(n, seed)` for tests that need another corpus size."""
    return make_docs
