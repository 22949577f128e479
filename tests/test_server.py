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
        assert set(hits[0]) == {"id", "score", "text", "title", "metadata", "window"}

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
        assert bad.status_code == 422 and "bogus" in bad.json()["detail"]
        other_type = client.post("/search", json={"query": "dough", "params": {"ndocs": 8}})  # PLAID's, not flat's
        assert other_type.status_code == 422 and "ndocs" in other_type.json()["detail"]


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


# ---------------------------------------------------------------------------------------------- hardening
# In-process (TestClient): no port, no thread; the same app.
from fastapi.testclient import TestClient  # noqa: E402

from mbert_retrieval.server import DEFAULT_HOST, ServerLimits  # noqa: E402


@pytest.fixture()
def app_for(tmp_path, tiny_modernbert):
    """`app_for(hybrid=False, read_only=False, limits=None, **index_params)` -> (TestClient, index folder)."""
    opened: list = []

    def make(hybrid: bool = False, read_only: bool = False, limits: ServerLimits | None = None, **params):
        folder = tmp_path / f"idx-{len(opened)}"
        Retriever.build(folder, DOCS, model=tiny_modernbert, hybrid=hybrid, **params).close()
        retriever = Retriever.open(folder)
        opened.append(retriever)
        return TestClient(create_app(retriever, read_only=read_only, limits=limits)), folder

    yield make
    for retriever in opened:
        retriever.close()


def _snapshot(folder) -> dict:
    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.rglob("*"))}


def test_read_only_server_never_writes(app_for):
    """A hybrid search on a read-only server of a dense index: BM25 in memory, no file written."""
    client, folder = app_for(read_only=True)
    before = _snapshot(folder)
    res = client.post("/search", json={"query": "hydrogen helium", "k": 2, "hybrid": True})
    assert res.status_code == 200 and res.json()["results"][0]["id"] == "stars"
    assert client.post("/search", json={"query": "dough", "k": 2}).status_code == 200
    assert client.get("/info").json()["hybrid"] is False
    assert _snapshot(folder) == before and not (folder / "bm25").exists()


def test_request_body_is_capped(app_for):
    assert ServerLimits().max_body_bytes == 1 << 20
    client, _ = app_for(limits=ServerLimits(max_body_bytes=4096))
    huge = client.post("/search", json={"query": "x" * 10_000_000, "k": 2})  # 10 MB: refused unread
    assert huge.status_code == 413 and "4096" in huge.json()["detail"]

    def chunks():  # no Content-Length: counted while reading
        yield b'{"query": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    streamed = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/search", json={"query": "dough", "k": 1}).status_code == 200


def test_query_length_and_count_are_bounded(app_for):
    client, _ = app_for(limits=ServerLimits(max_query_chars=100, max_query_tokens=8, max_queries=3))
    long = client.post("/search", json={"query": "z" * 101})
    assert long.status_code == 422 and "query" in long.json()["detail"] and "100" in long.json()["detail"]
    tokens = client.post("/search", json={"query": " ".join(["bread"] * 12)})  # 60 characters, 12 tokens
    assert tokens.status_code == 422 and "tokens" in tokens.json()["detail"]
    many = client.post("/search", json={"queries": ["a", "b", "c", "d"]})
    assert many.status_code == 422 and "queries" in many.json()["detail"]
    for empty in ("", "   "):
        res = client.post("/search", json={"query": empty})
        assert res.status_code == 422 and "empty" in res.json()["detail"]
    assert client.post("/search", json={"queries": ["a", " "]}).status_code == 422
    assert client.post("/search", json={"queries": ["dough", "stars", "git"], "k": 1}).status_code == 200


@pytest.mark.parametrize("hybrid,quantization", [(True, None), (False, "int8")])
def test_numeric_search_settings_are_bounded(app_for, hybrid, quantization):
    """A huge candidate depth with hybrid, or a huge rerank_factor (int8 codes are reranked), once gave HTTP
    500; every number is bounded (422 naming it)."""
    client, _ = app_for(hybrid=hybrid, quantization=quantization)
    cases = [
        ({"params": {"candidates": 10**12}}, "candidates"),
        ({"params": {"rerank_factor": 10**12}}, "rerank_factor"),
        ({"k": 0}, "k"), ({"k": 1001}, "k"), ({"k": "5"}, "k"), ({"k": 2.5}, "k"),
        ({"params": {"rerank_factor": 0}}, "rerank_factor"),
        ({"params": {"candidates": 10**12}}, "candidates"),
        ({"params": {"nprobe": -1}}, "nprobe"),
        ({"params": {"ef_search": 10**9}}, "ef_search"),
        ({"params": {"ndocs": 10**9}}, "ndocs"),
        ({"params": {"ncandidates": 0}}, "ncandidates"),
        ({"params": {"exact_filter_threshold": -1}}, "exact_filter_threshold"),
        ({"params": {"centroid_score_threshold": 1e300}}, "centroid_score_threshold"),
        ({"params": {"bogus": 1}}, "bogus"),
    ]
    for extra, field in cases:
        res = client.post("/search", json={"query": "dough", "hybrid": hybrid, **extra})
        assert res.status_code == 422, (extra, res.status_code, res.text)
        assert field in res.json()["detail"], (extra, res.json())
    ok = client.post("/search", json={"query": "dough", "k": 1000, "hybrid": hybrid,
                                      "params": {"rerank_factor": 100, "candidates": 10_000}})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3


def test_lone_surrogates_are_refused(app_for):
    client, _ = app_for()
    json_type = {"content-type": "application/json"}
    bodies = [
        ("/search", '{"query": "bread \\ud800"}'),
        ("/search", '{"queries": ["ok", "\\udc00"]}'),
        ("/search", '{"query": "bread", "filter": {"topic": "\\ud800"}}'),
        ("/documents", '{"documents": [{"id": "s", "text": "a \\ud800 b"}]}'),
        ("/documents", '{"documents": [{"id": "\\ud800", "text": "a b"}]}'),
        ("/documents", '{"documents": [{"id": "s", "text": "a", "title": "\\udfff"}]}'),
        ("/documents", '{"documents": [{"id": "s", "text": "a", "metadata": {"x": ["\\ud800"]}}]}'),
        ("/documents", '{"documents": [{"id": "s", "text": "a", "metadata": {"\\ud800": 1}}]}'),
    ]
    for path, body in bodies:
        res = client.post(path, content=body.encode(), headers=json_type)
        detail = res.json()["detail"]
        assert res.status_code == 422 and ("surrogate" in detail or "unicode" in detail), (body, res.text)
    assert client.get("/health").json()["documents"] == 3


def test_documents_per_request_are_bounded(app_for):
    client, _ = app_for(limits=ServerLimits(max_documents=2))
    docs = [{"id": f"d{i}", "text": f"text {i}"} for i in range(3)]
    res = client.post("/documents", json={"documents": docs})
    assert res.status_code == 422 and "documents" in res.json()["detail"]
    assert client.post("/documents", json={"documents": docs[:2]}).json()["added"] == 2


def test_deeply_nested_json_is_bad_input(app_for):
    client, _ = app_for()
    deep = '{"query": "bread", "filter": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    res = client.post("/search", content=deep.encode(), headers={"content-type": "application/json"})
    assert 400 <= res.status_code < 500


def test_write_while_another_process_writes_is_409(app_for):
    from mbert_retrieval.index.storage import writer_lock

    client, folder = app_for(hybrid=True)
    with writer_lock(folder):  # what `mbret add` in another process holds
        res = client.post("/documents", json={"documents": [{"id": "n", "text": "new"}]})
        assert res.status_code == 409, res.text
        assert "another process" in res.json()["detail"] and int(res.headers["retry-after"]) >= 1
        res = client.request("DELETE", "/documents", json={"ids": ["bread"]})
        assert res.status_code == 409 and "retry-after" in res.headers
        assert client.post("/search", json={"query": "dough", "k": 1}).status_code == 200  # reads go on
    assert client.post("/documents", json={"documents": [{"id": "n", "text": "new"}]}).json()["added"] == 1


def test_binds_to_localhost_by_default():
    """No authentication: `mbret serve` listens on this machine only unless --host says otherwise."""
    import typer

    from mbert_retrieval.cli.main import app

    assert DEFAULT_HOST == "127.0.0.1"
    serve = typer.main.get_command(app).commands["serve"]
    host = next(p for p in serve.params if p.name == "host")
    assert host.default == DEFAULT_HOST
