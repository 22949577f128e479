"""`mbret index --shards N [--ray ...]`: the encoding split into shards, one ordinary index out (searched,
changed, evaluated and served like any other), and folders of the former sharded layout refused; with typer's
CliRunner and a tiny real ModernBERT."""

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
    assert not (tmp_path / "sharded" / "_embeddings").exists()  # removed once the index is finished
    assert (tmp_path / "sharded" / "manifest.json").is_file() and not (tmp_path / "sharded" / "sharded.json").exists()

    _assert_same_results(_search_all(tmp_path / "sharded", queries), _search_all(tmp_path / "single", queries))
    flt = ("--filter", "group=1", "--filter", "lang=en")
    filtered = _search_all(tmp_path / "sharded", queries, *flt)
    _assert_same_results(filtered, _search_all(tmp_path / "single", queries, *flt))
    assert all(doc_id in {"d1", "d7"} for row in filtered for doc_id, _ in row)
    one = js(mbret("search", tmp_path / "sharded", "number 7", "-k", "3", "--json"))
    assert one["results"][0]["rank"] == 1 and "metadata" in one["results"][0]

    info = js(mbret("info", tmp_path / "sharded", "--json", "--verify"))  # an ordinary index: one description
    assert "sharded" not in info and "shards" not in info
    assert info["state"] == "ready" and info["kind"] == kind and info["n_documents"] == 12
    assert info["model_id"] == summary["model_id"] and info["hybrid"] is False
    assert info["model_path"] == str(Path(tiny_modernbert).resolve())


def test_rerun_is_a_no_op_and_interrupted_build_resumes(tmp_path, tiny_modernbert, encode_counter):
    corpus, queries = _corpus(tmp_path), _queries(tmp_path)
    encoded = encode_counter.encoded
    encode_counter.interrupt_at(2)  # Ctrl-C while the second shard is being encoded
    args = ("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "3", "-q")
    first = mbret(*args)
    assert first.exit_code == 130 and "re-run the same command to resume" in first.stderr
    info = js(mbret("info", tmp_path / "idx", "--json"))
    assert info["state"] == "encoding" and info["n_documents_done"] == 4 and info["n_shards_done"] == 1
    assert "re-run" in mbret("info", tmp_path / "idx").stderr
    r = mbret("search", tmp_path / "idx", "q")
    assert r.exit_code == 2 and "--shards N" in r.stderr  # not an index yet
    summary = js(mbret(*args, "--json"))
    assert summary["resumed_from"] == 4 and summary["documents"] == 12
    assert sum(encoded) == 12  # nothing encoded twice
    hits = js(mbret("search", tmp_path / "idx", "document", "-k", "20", "--json"))["results"]
    assert sorted(h["id"] for h in hits) == sorted(f"d{i}" for i in range(12))
    # a finished build: re-running it encodes nothing, whatever the shard count; another corpus is for `add`
    assert js(mbret(*args, "--json"))["resumed_from"] == 12 and sum(encoded) == 12
    r = mbret("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "4", "-q", "--json")
    assert js(r)["documents"] == 12 and sum(encoded) == 12
    other = tmp_path / "other.jsonl"
    other.write_text('{"_id": "x", "text": "another corpus"}\n')
    r = mbret("index", other, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "3", "-q")
    assert r.exit_code == 2 and "mbret add" in r.stderr
    _assert_same_results(_search_all(tmp_path / "idx", queries), _search_all(tmp_path / "idx", queries))


def test_build_interrupted_while_indexing_resumes(tmp_path, tiny_modernbert, monkeypatch):
    from mbert_retrieval.index import Index

    corpus = _corpus(tmp_path)
    real_add, calls = Index.add, {"n": 0}

    def add_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # Ctrl-C while the second shard goes into the index
            raise KeyboardInterrupt
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(Index, "add", add_then_interrupt)
    args = ("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "3", "-q")
    assert mbret(*args).exit_code == 130
    monkeypatch.setattr(Index, "add", real_add)
    info = js(mbret("info", tmp_path / "idx", "--json"))
    assert info["state"] == "building" and info["n_documents"] == 4 and "--shards 3" in info["resume_hint"]
    r = mbret("search", tmp_path / "idx", "document")
    assert r.exit_code == 2 and "--shards 3" in r.stderr
    summary = js(mbret(*args, "--json"))
    assert summary["documents"] == 12 and summary["resumed_from"] == 12  # every shard was encoded already


def test_sharded_hybrid_equals_unsharded_hybrid(tmp_path, tiny_modernbert):
    corpus, queries = _corpus(tmp_path), _queries(tmp_path)
    common = ("--model", tiny_modernbert, "--hybrid", "-q")
    ok(mbret("index", corpus, tmp_path / "single", *common))
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


def test_long_documents_split_into_windows_with_shards(tmp_path, tiny_modernbert):
    """Workers split long documents into windows as a one-process build does: same rows, same answers."""
    words = "retrieval shards merge windows tokens model index search query document encoder".split()
    path = tmp_path / "long.jsonl"
    rows = [{"_id": f"d{i}", "title": f"Doc {i}" if i % 2 else "",
             "text": " ".join(words[(i + j) % len(words)] for j in range(12 + 25 * (i % 4)))} for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ("--model", tiny_modernbert, "--window", "32", "-q", "--json")
    single = js(mbret("index", path, tmp_path / "single", *common))
    sharded = js(mbret("index", path, tmp_path / "sharded", *common, "--shards", "3"))
    assert sharded["split_documents"] == single["split_documents"] > 0
    assert sharded["windows"] == single["windows"] > sharded["documents"] == 10
    queries = _queries(tmp_path)
    _assert_same_results(_search_all(tmp_path / "sharded", queries), _search_all(tmp_path / "single", queries))
    hits = {name: js(mbret("search", tmp_path / name, "windows tokens", "-k", "10", "--json"))["results"]
            for name in ("single", "sharded")}
    assert [h.get("window") for h in hits["sharded"]] == [h.get("window") for h in hits["single"]]
    assert any(h.get("window") for h in hits["sharded"])


# ---------------------------------------------------------------------------------------------- writable, eval, serve
def test_sharded_build_is_writable_and_serves(tmp_path, tiny_modernbert, monkeypatch):
    from mbert_retrieval import Retriever

    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "--shards", "2", "-q"))
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "new", "text": "brand new zebra"}\n{"_id": "d3", "text": "changed text"}\n')
    assert js(mbret("add", idx, more, "-q", "--json"))["added"] == 1  # d3 is already there
    assert js(mbret("add", idx, more, "--update", "-q", "--json"))["updated"] == 1
    assert js(mbret("delete", idx, "d1", "--json"))["deleted"] == 1
    assert js(mbret("compact", idx, "--json"))["after"]["documents"] == 12
    hits = js(mbret("search", idx, "brand new zebra", "-k", "12", "--json"))["results"]
    assert "new" in [h["id"] for h in hits] and "d1" not in [h["id"] for h in hits]

    with Retriever.open(idx) as retriever:
        assert len(retriever) == 12 and retriever.get(["d3"])[0]["text"] == "changed text"
        assert retriever.add([{"id": "x", "text": "y"}]) == 1
        assert retriever.search("topic 1", k=20, filter={"group": 1}, hybrid=True)[0].metadata["group"] == 1

    import uvicorn
    from fastapi.testclient import TestClient

    answers: dict = {}

    def run(app, **kw):  # the requests are made while `mbret serve` holds the index open
        client = TestClient(app)
        answers["health"] = client.get("/health").json()
        answers["search"] = client.post("/search", json={"query": "document", "k": 3}).json()["results"]
        answers["post"] = client.post("/documents", json={"documents": [{"id": "n", "text": "t"}]}).status_code

    monkeypatch.setattr(uvicorn, "run", run)
    r = mbret("serve", idx)
    ok(r)
    assert "read-only" not in r.stderr
    assert answers["health"] == {"status": "ok", "documents": 13} and len(answers["search"]) == 3
    assert answers["post"] == 200  # not read-only: writes are served


def test_eval_on_a_sharded_build(tmp_path, tiny_modernbert):
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


# ---------------------------------------------------------------------------------------------- former layout
def test_a_folder_of_the_former_sharded_layout_is_refused(tmp_path, tiny_modernbert):
    old = tmp_path / "old"
    (old / "shard-00000").mkdir(parents=True)
    (old / "sharded.json").write_text(json.dumps({"kind": "dense", "index_type": "ivfpq", "model_id": "m/x",
                                                  "dim": 32, "state": "ready",
                                                  "shards": [{"name": f"shard-0000{i}"} for i in range(3)]}))
    corpus = _corpus(tmp_path)
    rebuild = f"mbret index CORPUS {old}-new --shards 3 --model m/x --kind dense --index ivfpq"
    for args in (("search", old, "document"), ("info", old), ("info", old, "--json"), ("add", old, corpus, "-q"),
                 ("delete", old, "d1"), ("compact", old), ("index", corpus, old, "--model", tiny_modernbert, "-q"),
                 ("index", corpus, old, "--model", tiny_modernbert, "--shards", "3", "-q"),
                 ("eval", tmp_path, "--index", old, "-q")):
        r = mbret(*args)
        assert r.exit_code == 2, (args, r.stderr)
        assert rebuild in r.stderr and r.stderr.strip().count("\n") == 0, (args, r.stderr)
        assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- torchrun
def test_torchrun_ranks_share_the_encoding(tmp_path, tiny_modernbert, monkeypatch):
    """Two ranks run one after the other (as torchrun would run them side by side): rank 1 encodes its
    shards and returns, rank 0 encodes its own and builds the one index."""
    corpus, queries = _corpus(tmp_path), _queries(tmp_path)
    ok(mbret("index", corpus, tmp_path / "single", "--model", tiny_modernbert, "-q"))
    args = ("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--shards", "4", "-q", "--json")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rank1 = js(mbret(*args))
    assert rank1["rank"] == 1 and rank1["backend"] == "torchrun" and "documents" not in rank1
    assert not (tmp_path / "idx" / "manifest.json").exists()
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
    r = mbret("index", corpus, idx, "--model", tiny_modernbert, "-q", "--shards", "2", "--window", "4")
    assert r.exit_code == 2 and "--window" in r.stderr and not idx.exists()
    ok(mbret("index", corpus, tmp_path / "plain", "--model", tiny_modernbert, "-q"))  # a finished index
    r = mbret("index", corpus, tmp_path / "plain", "--model", tiny_modernbert, "-q", "--shards", "2", "--index", "hnsw")
    assert r.exit_code == 2 and "flat" in r.stderr and "hnsw" in r.stderr


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
