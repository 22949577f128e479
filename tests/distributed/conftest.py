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
