"""The HTTP API: a real uvicorn server on 127.0.0.1 (free port, background thread) and a real httpx client."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from mbert_retrieval.retriever import Retriever  # noqa: E402
from mbert_retrieval.server import create_app  # noqa: E402

DOCS = [
    {"id": "bread", "title": "Bread", "text": "knead the dough and bake the loaf", "metadata": {"topic": "cooking"}},
    {"id": "stars", "title": "Stars", "text": "stars fuse hydrogen into helium", "metadata": {"topic": "science"}},
    {"id": "git", "title": "Git", "text": "a git branch points to a commit", "metadata": {"topic": "programming"}},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """uvicorn in a daemon thread; `stop()` asks it to exit and waits (bounded)."""

    def __init__(self, app, port: int):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the test server did not stop"


@pytest.fixture()
def served(tmp_path, tiny_modernbert):
    def start(read_only: bool = False, hybrid: bool = True):
        retriever = Retriever.build(tmp_path / f"idx-{read_only}", DOCS, model=tiny_modernbert, hybrid=hybrid)
        port = _free_port()
        server = _Server(create_app(retriever, read_only=read_only), port)
        server.start()
        started.append((server, retriever))
        return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)

    started: list = []
    yield start
    for server, retriever in started:
        server.stop()
        retriever.close()


def test_health_info_search(served):
    with served() as client:
        assert client.get("/health").json() == {"status": "ok", "documents": 3}
        info = client.get("/info").json()
        assert info["kind"] == "dense" and info["n_documents"] == 3 and info["read_only"] is False

        res = client.post("/search", json={"query": "hydrogen helium", "k": 2})
        assert res.status_code == 200
        hits = res.json()["results"]
        assert hits[0]["id"] == "stars"  # BM25 fused in (hybrid) finds the exact terms with a random model
        assert set(hits[0]) == {"id", "score", "text", "title", "metadata"}

        many = client.post("/search", json={"queries": ["dough", "commit"], "k": 1, "hybrid": True}).json()
        assert [row[0]["id"] for row in many["results"]] == ["bread", "git"]

        flt = client.post("/search", json={"query": "stars", "k": 3, "filter": {"topic": "cooking"}}).json()
        assert [h["id"] for h in flt["results"]] == ["bread"]


def test_bad_requests(served):
    with served() as client:
        assert client.post("/search", json={"k": 2}).status_code == 422  # neither query nor queries
        assert client.post("/search", json={"query": "x", "queries": ["y"]}).status_code == 422
        assert client.post("/search", json={"query": "x", "k": 0}).status_code == 422
        bad = client.post("/search", json={"query": "x", "filter": {"year": {"$bogus": 1}}})
        assert bad.status_code == 400 and "$bogus" in bad.json()["detail"]
        assert client.post("/documents", json={"documents": []}).status_code == 422
        assert client.post("/documents", json={"documents": [{"id": "x"}]}).status_code == 422
        assert client.request("DELETE", "/documents", json={"ids": []}).status_code == 422
        assert client.request("DELETE", "/documents").status_code == 400


def test_add_update_delete_documents(served):
    with served() as client:
        res = client.post("/documents", json={"documents": [
            {"id": "okapi", "text": "the okapi is a forest giraffe", "metadata": {"topic": "science"}},
            {"id": "bread", "text": "changed text is ignored by add"}]})
        assert res.json() == {"added": 1, "given": 2, "documents": 4}
        assert client.post("/search", json={"query": "okapi", "k": 1}).json()["results"][0]["id"] == "okapi"

        res = client.post("/documents", json={"update": True, "documents": [{"id": "bread", "text": "sourdough"}]})
        assert res.json()["updated"] == 1
        assert client.post("/search", json={"query": "sourdough", "k": 1}).json()["results"][0]["text"] == "sourdough"

        res = client.request("DELETE", "/documents", json={"ids": ["okapi", "nope"]})
        assert res.json() == {"deleted": 1, "documents": 3}
        assert client.request("DELETE", "/documents", params={"ids": ["git"]}).json()["deleted"] == 1
        assert client.get("/health").json()["documents"] == 2


def test_read_only_server_refuses_writes(served):
    with served(read_only=True, hybrid=False) as client:
        assert client.post("/documents", json={"documents": [{"id": "a", "text": "b"}]}).status_code == 403
        assert client.request("DELETE", "/documents", json={"ids": ["bread"]}).status_code == 403
        assert client.post("/search", json={"query": "dough", "k": 3}).status_code == 200
        assert client.get("/health").json()["documents"] == 3


def test_search_params(served):
    with served(hybrid=False) as client:
        ok = client.post("/search", json={"query": "dough", "k": 2, "params": {"rerank": False}})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 2
        bad = client.post("/search", json={"query": "dough", "params": {"bogus": 1}})
        assert bad.status_code == 400 and "bogus" in bad.json()["detail"]


@pytest.mark.parametrize("hybrid", [False, True])
def test_server_sees_documents_another_process_adds(served, tmp_path, tiny_modernbert, hybrid):
    """`mbret add` / `mbret delete` beside a running `mbret serve`: the server's next search sees them
    (another Retriever on the same folder has its own SQLite connection, as another process does)."""
    with served(hybrid=hybrid) as client:
        assert client.post("/search", json={"query": "volcano lava", "k": 3}).status_code == 200
        other = Retriever.open(tmp_path / "idx-False", model=tiny_modernbert)
        other.add([{"id": "volcano", "text": "volcano lava magma eruption ash", "metadata": {"topic": "science"}}])
        other.delete(["git"])
        other.close()
        assert client.get("/health").json()["documents"] == 3
        ids = [h["id"] for h in client.post("/search", json={"query": "volcano lava magma eruption ash",
                                                             "k": 5}).json()["results"]]
        assert "volcano" in ids and "git" not in ids
        hits = client.post("/search", json={"query": "eruption", "k": 3, "filter": {"topic": "science"}}).json()
        assert {h["id"] for h in hits["results"]} == {"stars", "volcano"}
