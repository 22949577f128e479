"""`mbret index --shards N [--ray ...]` and the commands that read a sharded index folder (search, info, eval,
serve), with typer's CliRunner and a tiny real ModernBERT."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mbert_retrieval.cli.main import app

runner = CliRunner()

QUERIES = ["document about topic 1", "number 7", "retrieval shard merge", "group two text"]


def mbret(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def ok(result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def js(result):
    return json.loads(ok(result))


def _corpus(tmp: Path, n: int = 12) -> Path:
    path = tmp / "docs.jsonl"
    rows = [{"_id": f"d{i}", "title": f"Doc {i}" if i % 4 else "", "text": f"document number {i} about topic {i % 3}",
             "metadata": {"group": i % 3, "lang": "en" if i % 2 else "de"}} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _queries(tmp: Path) -> Path:
    path = tmp / "queries.jsonl"
    path.write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(QUERIES)))
    return path


def _search_all(index: Path, queries: Path, *extra: str) -> list[list[tuple[str, float]]]:
    lines = ok(mbret("search", index, "--queries", queries, "-k", "5", "--json", *extra)).splitlines()
    return [[(h["id"], h["score"]) for h in json.loads(line)["results"]] for line in lines]


def _assert_same_results(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert [i for i, _ in g] == [i for i, _ in w]
        assert [s for _, s in g] == pytest.approx([s for _, s in w], abs=1e-4)


# ---------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_sharded_flat_search_equals_unsharded(tmp_path, tiny_modernbert, kind):
    corpus, queries = _corpus(tmp_path), _queries(tmp_path)
    common = ("--model", tiny_modernbert, "--kind", kind, "-q")
    ok(mbret("index", corpus, tmp_path / "single", *common))
    summary = js(mbret("index", corpus, tmp_path / "sharded", *common, "--shards", "2", "--json"))
    assert summary["documents"] == 12 and summary["shards"] == 2 and summary["backend"] == "local"
    assert summary["resumed_from"] == 0 and summary["kind"] == kind
    assert not (tmp_path / "sharded" / "_embeddings").exists()  # removed once every shard index is built

    _assert_same_results(_search_all(tmp_path / "sharded", queries), _search_all(tmp_path / "single", queries))
    flt = ("--filter", "group=1", "--filter", "lang=en")
    filtered = _search_all(tmp_path / "sharded", queries, *flt)
    _assert_same_results(filtered, _search_all(tmp_path / "single", queries, *flt))
    assert all(doc_id in {"d1", "d7"} for row in filtered for doc_id, _ in row)
    one = js(mbret("search", tmp_path / "sharded", "number 7", "-k", "3", "--json"))
    assert one["results"][0]["rank"] == 1 and "metadata" in one["results"][0]

    info = js(mbret("info", tmp_path / "sharded", "--json", "--verify"))
    assert info["sharded"] is True and info["state"] == "ready" and info["kind"] == kind
    assert info["n_shards"] == 2 and info["n_documents"] == 12
    assert [s["n_documents"] for s in info["shards"]] == [6, 6] and info["model_id"] == summary["model_id"]
    assert info["model_path"] == str(Path(tiny_modernbert).resolve()) and info["hybrid"] is False
    text = ok(mbret("info", tmp_path / "sharded"))
    assert "n_shards" in text and "shard-00001" in text


def test_rerun_is_a_no_op_and_interrupted_build_resumes(tmp_path, tiny_modernbert, encode_counter):
    corpus, queries = _corpus(tmp_path), _queries(tmp_path)
    encoded = encode_counter.encoded
    encode_counter.interrupt_at(2)  # Ctrl-C while the second shard is being encoded
    args = ("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "3", "-q")
    first = mbret(*args)
    assert first.exit_code == 130 and "re-run the same command to resume" in first.stderr
    info = js(mbret("info", tmp_path / "idx", "--json"))
    assert info["sharded"] is True and info["state"] == "encoding" and info["n_documents_done"] == 4
    assert "re-run" in mbret("info", tmp_path / "idx").stderr
    assert mbret("search", tmp_path / "idx", "q").exit_code == 2  # not an index yet
    summary = js(mbret(*args, "--json"))
    assert summary["resumed_from"] == 4 and summary["documents"] == 12
    assert sum(encoded) == 12  # nothing encoded twice
    hits = js(mbret("search", tmp_path / "idx", "document", "-k", "20", "--json"))["results"]
    assert sorted(h["id"] for h in hits) == sorted(f"d{i}" for i in range(12))
    # a finished build: re-running it encodes nothing; another shard count or corpus is refused
    assert js(mbret(*args, "--json"))["resumed_from"] == 12 and sum(encoded) == 12
    r = mbret("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "4", "-q")
    assert r.exit_code == 2 and "read-only" in r.stderr and "n_shards" in r.stderr
    other = tmp_path / "other.jsonl"
    other.write_text('{"_id": "x", "text": "another corpus"}\n')
    r = mbret("index", other, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "3", "-q")
    assert r.exit_code == 2 and "corpus" in r.stderr
    _assert_same_results(_search_all(tmp_path / "idx", queries), _search_all(tmp_path / "idx", queries))


def _use_bm25s(folder) -> None:
    """Drop the FTS5 BM25 table of an unsharded index: its hybrid searches then use bm25s in memory, as a
    sharded folder's do (FTS5 lives in one document store; a sharded folder has one per shard)."""
    from mbert_retrieval.index.docstore import DocStore
    from mbert_retrieval.index.lexical import LexicalIndex

    store = DocStore(folder / "docs.sqlite")
    try:
        LexicalIndex(store).drop()
    finally:
        store.close()


def test_sharded_hybrid_equals_unsharded_hybrid(tmp_path, tiny_modernbert):
    corpus, queries = _corpus(tmp_path), _queries(tmp_path)
    common = ("--model", tiny_modernbert, "--hybrid", "-q")
    ok(mbret("index", corpus, tmp_path / "single", *common))
    _use_bm25s(tmp_path / "single")
    assert js(mbret("index", corpus, tmp_path / "sharded", *common, "--shards", "2", "--json"))["hybrid"] is True
    fused = _search_all(tmp_path / "sharded", queries)
    _assert_same_results(fused, _search_all(tmp_path / "single", queries))
    dense_only = _search_all(tmp_path / "sharded", queries, "--no-hybrid")
    _assert_same_results(dense_only, _search_all(tmp_path / "single", queries, "--no-hybrid"))
    assert fused != dense_only  # BM25 was fused in
    flt = ("--filter", "group=2")
    _assert_same_results(_search_all(tmp_path / "sharded", queries, *flt),
                         _search_all(tmp_path / "single", queries, *flt))
    assert js(mbret("info", tmp_path / "sharded", "--json"))["hybrid"] is True


# ---------------------------------------------------------------------------------------------- read-only, eval, serve
def test_sharded_index_is_read_only_and_serves(tmp_path, tiny_modernbert, monkeypatch):
    from mbert_retrieval import Retriever
    from mbert_retrieval.retriever_sharded import ShardedReadOnlyError

    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "--shards", "2", "-q"))
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "new", "text": "brand new"}\n')
    for args in (("add", idx, more, "-q"), ("add", idx, more, "--update", "-q"), ("delete", idx, "d1")):
        r = mbret(*args)
        assert r.exit_code == 2 and "read-only" in r.stderr and "--shards 2" in r.stderr, args
    r = mbret("index", more, idx, "--model", tiny_modernbert, "-q")  # unsharded build into a sharded folder
    assert r.exit_code == 2 and "sharded" in r.stderr

    with Retriever.open(idx) as retriever:
        assert len(retriever) == 12 and retriever.info()["n_shards"] == 2
        assert retriever.get(["d11", "nope", "d0"])[0]["id"] == "d11"
        assert retriever.get(["nope"]) == [None]
        with pytest.raises(ShardedReadOnlyError, match="read-only"):
            retriever.add([{"id": "x", "text": "y"}])
        assert retriever.search("topic 1", k=20, filter={"group": 1}, hybrid=True)[0].metadata["group"] == 1

    import uvicorn
    from fastapi.testclient import TestClient

    calls: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    r = mbret("serve", idx)
    ok(r)
    assert "read-only" in r.stderr
    client = TestClient(calls[-1])
    assert client.get("/health").json() == {"status": "ok", "documents": 12}
    assert len(client.post("/search", json={"query": "document", "k": 3}).json()["results"]) == 3
    assert client.post("/documents", json={"documents": [{"id": "n", "text": "t"}]}).status_code == 403


def test_eval_on_a_sharded_index(tmp_path, tiny_modernbert):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    shutil.copy(_corpus(tmp_path), beir / "corpus.jsonl")
    (beir / "queries.jsonl").write_text(_queries(tmp_path).read_text())
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"q{i}\td{i * 3}\t1\n" for i in range(len(QUERIES))))
    ok(mbret("index", beir, tmp_path / "single", "--model", tiny_modernbert, "-q"))
    ok(mbret("index", beir, tmp_path / "sharded", "--model", tiny_modernbert, "--shards", "3", "-q"))
    scores = {name: js(mbret("eval", beir, "--index", tmp_path / name, "-k", "10", "--json", "-q"))
              ["datasets"]["beir"]["scores"] for name in ("single", "sharded")}
    assert scores["sharded"] == pytest.approx(scores["single"], abs=1e-6)


# ---------------------------------------------------------------------------------------------- torchrun
def test_torchrun_ranks_share_the_encoding(tmp_path, tiny_modernbert, monkeypatch):
    """Two ranks run one after the other (as torchrun would run them side by side): rank 1 encodes its
    shards and returns, rank 0 encodes its own and builds every shard index."""
    corpus, queries = _corpus(tmp_path), _queries(tmp_path)
    ok(mbret("index", corpus, tmp_path / "single", "--model", tiny_modernbert, "-q"))
    args = ("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "4", "-q", "--json")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rank1 = js(mbret(*args))
    assert rank1["rank"] == 1 and rank1["backend"] == "torchrun" and "documents" not in rank1
    assert not (tmp_path / "idx" / "sharded.json").exists()
    monkeypatch.setenv("RANK", "0")
    rank0 = js(mbret(*args))
    assert rank0["backend"] == "torchrun" and rank0["documents"] == 12 and rank0["resumed_from"] == 6
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    _assert_same_results(_search_all(tmp_path / "idx", queries), _search_all(tmp_path / "single", queries))


# ---------------------------------------------------------------------------------------------- bad options
def test_bad_shard_options_exit_2(tmp_path, tiny_modernbert, monkeypatch):
    corpus = _corpus(tmp_path)
    idx = tmp_path / "i"
    cases = [
        (("--shards", "0"), "--shards must be >= 1"),
        (("--ray", "auto"), "give --shards N"),
        (("--shards", "2", "--workers", "2"), "use it with --ray"),
        (("--shards", "2", "--ray", "local", "--workers", "0"), "--workers must be >= 1"),
        (("--shards", "2", "-p", "no_such_setting=1"), "no_such_setting"),
        (("--shards", "2", "--kind", "colbert", "--quantization", "int8"), "quantization"),
    ]
    for extra, message in cases:
        r = mbret("index", corpus, idx, "--model", tiny_modernbert, "-q", *extra)
        assert r.exit_code == 2 and message in r.stderr, (extra, r.stderr)
        assert "Traceback" not in r.stderr and not idx.exists()
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = mbret("index", corpus, idx, "--model", tiny_modernbert, "-q")
    assert r.exit_code == 2 and "torchrun" in r.stderr
    r = mbret("index", corpus, idx, "--model", tiny_modernbert, "-q", "--shards", "2", "--ray", "auto")
    assert r.exit_code == 2 and "torchrun" in r.stderr
    monkeypatch.delenv("WORLD_SIZE")
    ok(mbret("index", corpus, tmp_path / "plain", "--model", tiny_modernbert, "-q"))
    r = mbret("index", corpus, tmp_path / "plain", "--model", tiny_modernbert, "-q", "--shards", "2")
    assert r.exit_code == 2 and "unsharded" in r.stderr


# ---------------------------------------------------------------------------------------------- Ray
def test_ray_local_cluster_builds_the_same_index(tmp_path, tiny_modernbert, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mbert-retrieval[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'mbert-retrieval[ray]')")
    import ray

    corpus, queries = _corpus(tmp_path), _queries(tmp_path)
    ok(mbret("index", corpus, tmp_path / "single", "--model", tiny_modernbert, "-q"))
    owned = not ray.is_initialized()
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's unix sockets need a short path
    monkeypatch.setenv("RAY_TMPDIR", short)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        t = time.monotonic()
        summary = js(mbret("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "3",
                           "--ray", "local", "--workers", "2", "-q", "--json"))
        print(f"mbret index --ray local: {time.monotonic() - t:.1f} s")
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert summary["backend"] == "ray" and summary["documents"] == 12
    assert ray.is_initialized() != owned  # the Ray it started is shut down again (an existing one is kept)
    _assert_same_results(_search_all(tmp_path / "idx", queries), _search_all(tmp_path / "single", queries))
