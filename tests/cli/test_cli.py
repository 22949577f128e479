"""`mbret` end to end with typer's CliRunner: every command, each corpus kind, resume, filters, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mbert_retrieval.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
runner = CliRunner()


def mbret(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def ok(result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def js(result):
    return json.loads(ok(result))


# ---------------------------------------------------------------------------------------------- inputs
def _jsonl(tmp: Path) -> Path:
    path = tmp / "docs.jsonl"
    rows = [{"_id": f"d{i}", "title": f"Doc {i}", "text": f"document number {i} about topic {i % 3}",
             "metadata": {"group": i % 3, "lang": "en" if i % 2 else "de"}} for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _beir(tmp: Path) -> Path:
    folder = tmp / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "c1", "title": "A", "text": "alpha"}\n'
                                         '{"_id": "c2", "title": "B", "text": "beta"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "alpha?"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tc1\t1\n")
    return folder


def _text_dir(tmp: Path) -> Path:
    folder = tmp / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Notes\nsome markdown notes")
    (folder / "sub" / "b.txt").write_text("plain text file")
    return folder


def _code_dir(tmp: Path) -> Path:
    folder = tmp / "src"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "util.py").write_text("def add(a, b):\n    return a + b\n")
    (folder / "main.go").write_text("package main\nfunc main() {}\n")
    (folder / "README.md").write_text("prose beside the code: indexed too")
    (folder / "node_modules").mkdir()
    (folder / "node_modules" / "x.js").write_text("ignored()")
    return folder


# ---------------------------------------------------------------------------------------------- help
def test_help_lists_commands_examples_and_exit_codes():
    out = ok(mbret("--help"))
    for cmd in ("index", "search", "info", "add", "delete", "serve", "train", "eval", "bench"):
        assert cmd in out
    assert "Exit codes" in out and "Examples" in out
    sub = ok(mbret("search", "--help"))
    assert "--filter" in sub and "Examples" in sub and "Exit codes" in sub


# ---------------------------------------------------------------------------------------------- index
@pytest.mark.parametrize("kind,expected", [
    ("jsonl", {f"d{i}" for i in range(10)}),
    ("beir", {"c1", "c2"}),
    ("text", {"a.md", "sub/b.txt"}),
    ("code", {"pkg/util.py", "main.go", "README.md"}),  # a folder: every text-like file, code and prose
])
def test_index_each_input_kind(tmp_path, tiny_modernbert, kind, expected):
    corpus = {"jsonl": _jsonl, "beir": _beir, "text": _text_dir, "code": _code_dir}[kind](tmp_path)
    summary = js(mbret("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--json", "-q"))
    assert summary["documents"] == len(expected) and summary["resumed_from"] == 0
    info = js(mbret("info", tmp_path / "idx", "--json"))
    assert info["n_documents"] == len(expected) and info["kind"] == "dense" and info["state"] == "ready"
    hits = js(mbret("search", tmp_path / "idx", "anything", "-k", "50", "--json"))["results"]
    assert {h["id"] for h in hits} == expected
    if kind == "code":
        assert {h["metadata"].get("language") for h in hits} == {"python", "go", None}


def test_index_colbert_and_hybrid(tmp_path, tiny_modernbert):
    corpus = _jsonl(tmp_path)
    summary = js(mbret("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--kind", "colbert",
                       "--hybrid", "--json", "-q"))
    assert summary["kind"] == "colbert" and summary["hybrid"] is True
    hits = js(mbret("search", tmp_path / "idx", "number 7", "--json"))["results"]
    assert hits[0]["id"] == "d7"  # the exact term "7" comes through BM25 fusion
    hits = js(mbret("search", tmp_path / "idx", "number 7", "--no-hybrid", "-k", "3", "--json"))["results"]
    assert len(hits) == 3


def test_index_resumes_after_interruption(tmp_path, tiny_modernbert, encode_counter):
    corpus = _jsonl(tmp_path)
    encoded = encode_counter.encoded
    encode_counter.interrupt_at(2)  # Ctrl-C while the second chunk is being encoded
    args = ("index", corpus, tmp_path / "idx", "--model", tiny_modernbert, "--chunk-size", "4", "-q")
    first = mbret(*args)
    assert first.exit_code == 130 and "re-run the same command to resume" in first.stderr
    assert js(mbret("info", tmp_path / "idx", "--json"))["n_documents"] == 4
    summary = js(mbret(*args, "--json"))
    assert summary["resumed_from"] == 4 and summary["documents"] == 10
    assert sum(encoded) == 10  # nothing encoded twice
    hits = js(mbret("search", tmp_path / "idx", "document", "-k", "20", "--json"))["results"]
    assert sorted(h["id"] for h in hits) == sorted(f"d{i}" for i in range(10))
    # re-running a finished build is a no-op
    assert js(mbret(*args, "--json"))["documents"] == 10 and sum(encoded) == 10


# ---------------------------------------------------------------------------------------------- search
@pytest.fixture(scope="module")
def example_index(tmp_path_factory, minilm_path) -> Path:
    path = tmp_path_factory.mktemp("cli") / "examples"
    ok(mbret("index", EXAMPLES / "corpus.jsonl", path, "--model", minilm_path, "-q"))
    return path


def test_search_ranks_with_minilm_and_prints_table(example_index):
    out = ok(mbret("search", example_index, "how long should I boil an egg", "-k", "3"))
    assert "cook-eggs" in out and "Boiling eggs" in out
    res = js(mbret("search", example_index, "when did people first walk on the moon", "-k", "2", "--json"))
    assert res["query"].startswith("when did") and res["results"][0]["id"] == "hist-moon-landing"
    assert res["results"][0]["rank"] == 1 and res["results"][0]["metadata"]["year"] == 1969


def test_search_filters(example_index):
    def ids(*flt: str) -> list[dict]:
        args = [a for f in flt for a in ("--filter", f)]
        return js(mbret("search", example_index, "food and cooking", "-k", "50", "--json", *args))["results"]

    cooking = ids("topic=cooking")
    assert cooking and {h["metadata"]["topic"] for h in cooking} == {"cooking"}
    recent = ids("topic=cooking", "year>=2020")
    assert recent and all(h["metadata"]["year"] >= 2020 for h in recent) and len(recent) < len(cooking)
    assert {h["metadata"]["topic"] for h in ids('topic=["music", "arts"]')} == {"music", "arts"}
    assert all(h["metadata"]["year"] < 0 for h in ids('{"year": {"$lt": 0}}'))
    assert all(h["metadata"]["topic"] != "cooking" for h in ids("topic!=cooking"))
    assert ids("topic=nothing") == []


def test_search_queries_file_jsonl_output(example_index):
    lines = ok(mbret("search", example_index, "--queries", EXAMPLES / "queries.jsonl", "-k", "1", "--json"))
    rows = [json.loads(x) for x in lines.splitlines()]
    assert len(rows) == 12 and rows[0]["query_id"] == "q1"
    assert rows[0]["results"][0]["id"] == "sci-photosynthesis"


def test_search_many_queries_in_batches_keeps_order(example_index, tmp_path):
    """More queries than one progress batch (256): every query answered, in file order."""
    texts = [json.loads(x)["text"] for x in (EXAMPLES / "queries.jsonl").read_text().splitlines()]
    many = tmp_path / "many.tsv"
    many.write_text("".join(f"m{i}\t{texts[i % len(texts)]}\n" for i in range(300)))
    rows = [json.loads(x) for x in ok(mbret("search", example_index, "--queries", many, "-k", "1",
                                            "--json")).splitlines()]
    assert [r["query_id"] for r in rows] == [f"m{i}" for i in range(300)]
    assert rows[0]["results"] == rows[len(texts)]["results"] and rows[0]["results"][0]["id"] == "sci-photosynthesis"


def test_search_bad_usage(example_index, tmp_path):
    r = mbret("search", example_index)
    assert r.exit_code == 2 and "either a QUERY" in r.stderr
    r = mbret("search", example_index, "q", "--filter", "no-operator")
    assert r.exit_code == 2 and "--filter" in r.stderr
    r = mbret("search", example_index, "q", "--filter", '{"year": {"$nope": 1}}')
    assert r.exit_code == 2 and "$nope" in r.stderr
    r = mbret("search", tmp_path / "missing", "q")
    assert r.exit_code == 2 and "not an index folder" in r.stderr
    bad_queries = tmp_path / "q.jsonl"
    bad_queries.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2"}\n')
    r = mbret("search", example_index, "--queries", bad_queries)
    assert r.exit_code == 2 and f"{bad_queries}:2:" in r.stderr
    r = mbret("search", example_index, "q", "-p", "bogus=3")
    assert r.exit_code == 2 and "bogus" in r.stderr


# ---------------------------------------------------------------------------------------------- add / delete / info
def test_add_update_delete_info(tmp_path, tiny_modernbert):
    idx = tmp_path / "idx"
    ok(mbret("index", _jsonl(tmp_path), idx, "--model", tiny_modernbert, "-q"))
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "new1", "text": "brand new"}\n{"_id": "d0", "text": "changed d0"}\n')
    added = js(mbret("add", idx, more, "--json", "-q"))
    assert {k: added[k] for k in ("index", "given", "added", "documents")} == {"index": str(idx), "given": 2,
                                                                              "added": 1, "documents": 11}
    assert js(mbret("add", idx, more, "--update", "--json", "-q"))["updated"] == 1  # d0 changed, new1 identical
    hits = js(mbret("search", idx, "x", "-k", "20", "--json"))["results"]
    assert {h["id"]: h["text"] for h in hits}["d0"] == "changed d0"
    # the replaced document has no metadata any more: a group filter no longer matches it
    hits = js(mbret("search", idx, "x", "-k", "20", "--json", "--filter", "group=0"))["results"]
    assert "d0" not in {h["id"] for h in hits} and {h["id"] for h in hits} == {"d3", "d6", "d9"}

    res = js(mbret("delete", idx, "new1", "d1", "ghost", "--json"))
    assert res == {"index": str(idx), "deleted": 2, "not_found": ["ghost"], "documents": 9}
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("d2\n\nd3\n")
    assert js(mbret("delete", idx, "--ids-file", ids_file, "--json"))["deleted"] == 2
    assert mbret("delete", idx).exit_code == 2

    info = js(mbret("info", idx, "--json"))
    assert info["n_documents"] == 7 and info["n_deleted"] >= 4
    assert info["model_path"] == str(Path(tiny_modernbert).resolve())
    text = ok(mbret("info", idx))
    assert "n_documents" in text and "dense" in text


# ---------------------------------------------------------------------------------------------- errors
def test_malformed_jsonl_exits_2_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n\n{"_id": "b", "text": "broken"\n')
    r = mbret("index", bad, tmp_path / "idx")
    assert r.exit_code == 2
    assert f"{bad}:3:" in r.stderr and "invalid JSON" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "idx").exists()  # rejected before anything is written
    missing = mbret("index", tmp_path / "nope.jsonl", tmp_path / "idx")
    assert missing.exit_code == 2 and "nope.jsonl" in missing.stderr


def test_bad_options_exit_2(tmp_path, tiny_modernbert):
    corpus = _jsonl(tmp_path)
    r = mbret("index", corpus, tmp_path / "i", "--kind", "dense", "--index", "plaid")
    assert r.exit_code == 2 and "not available" in r.stderr
    r = mbret("index", corpus, tmp_path / "i", "--index", "annoy")
    assert r.exit_code == 2
    r = mbret("index", corpus, tmp_path / "i", "--param", "novalue")
    assert r.exit_code == 2 and "key=value" in r.stderr
    r = mbret("index", corpus, tmp_path / "i", "--model", tmp_path / "no-such-model")
    assert r.exit_code == 2 and "no-such-model" in r.stderr
    r = mbret("index", corpus, tmp_path / "i", "--model", tiny_modernbert, "-p", "bogus=3")
    assert r.exit_code == 2 and "bogus" in r.stderr and not (tmp_path / "i" / "manifest.json").exists()
    r = mbret("eval", tmp_path / "no-such-dataset", "--model", tiny_modernbert)
    assert r.exit_code == 2 and "unknown dataset" in r.stderr


def test_model_index_mismatch_is_a_clear_error(tmp_path, tiny_modernbert, minilm_path):
    idx = tmp_path / "idx"
    ok(mbret("index", _jsonl(tmp_path), idx, "--model", tiny_modernbert, "-q"))
    r = mbret("search", idx, "query", "--model", minilm_path)
    assert r.exit_code == 2 and "built with model" in r.stderr and "Traceback" not in r.stderr
    r = mbret("index", _jsonl(tmp_path), idx, "--model", minilm_path, "-q")  # resume with another model
    assert r.exit_code == 2 and "built with model" in r.stderr
    r = mbret("index", _jsonl(tmp_path), idx, "--model", tiny_modernbert, "--index", "hnsw", "-q")
    assert r.exit_code == 2 and "dense/flat" in r.stderr


def test_corrupt_index_is_a_runtime_failure(tmp_path, tiny_modernbert):
    idx = tmp_path / "idx"
    ok(mbret("index", _jsonl(tmp_path), idx, "--model", tiny_modernbert, "-q"))
    (idx / "manifest.json").write_text("{not json")
    r = mbret("info", idx)
    assert r.exit_code == 1 and "corrupt" in r.stderr


def test_offline_fallback_note(tmp_path, monkeypatch):
    from mbert_retrieval import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.0: False)
    if not hub.resolve_model(None, "dense").fallback:
        pytest.skip("the default model is cached locally: no fallback to show")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "hello world"}\n')
    r = mbret("index", corpus, tmp_path / "idx", "-q", "--json")
    assert json.loads(ok(r))["fallback_model"] is True
    assert "falling back" in r.stderr and "all-MiniLM-L6-v2" in r.stderr
    assert "offline fallback model" in mbret("info", tmp_path / "idx").stderr


# ---------------------------------------------------------------------------------------------- serve
def test_serve_binds_localhost_by_default_and_warns_on_public_host(tmp_path, tiny_modernbert, monkeypatch):
    import uvicorn

    idx = tmp_path / "idx"
    ok(mbret("index", _jsonl(tmp_path), idx, "--model", tiny_modernbert, "-q"))
    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    r = mbret("serve", idx, "--port", "8123")
    ok(r)
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8123
    assert {route.path for route in calls[-1]["app"].routes} >= {"/health", "/search", "/documents", "/info"}
    assert "warning" not in r.stderr
    r = mbret("serve", idx, "--host", "0.0.0.0")
    ok(r)
    assert calls[-1]["host"] == "0.0.0.0" and "warning" in r.stderr and "no authentication" in r.stderr
    assert mbret("serve", idx, "--port", "0").exit_code == 2


# ---------------------------------------------------------------------------------------------- train / eval / bench
def test_train_short_run_and_config_errors(tmp_path, tiny_modernbert):
    out = tmp_path / "run"
    res = js(mbret("train", "--model", tiny_modernbert, "--data", EXAMPLES / "train.jsonl", "--output-dir", out,
                   "--max-steps", "2", "--batch-size", "4", "--set", "warmup_ratio=0", "--json", "-q"))
    assert Path(res["model"]).is_dir() and res["config"]["max_steps"] == 2
    r = mbret("train", "--model", tiny_modernbert, "--data", EXAMPLES / "train.jsonl", "--set", "no_such_field=1")
    assert r.exit_code == 2 and "no_such_field" in r.stderr
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"model": "x", "data": ["y"], "lr": "fast"}')
    r = mbret("train", "--config", cfg)
    assert r.exit_code == 2 and "lr" in r.stderr and str(cfg) in r.stderr


def test_eval_model_and_index(tmp_path, tiny_modernbert, example_index):
    res = js(mbret("eval", EXAMPLES, "--model", tiny_modernbert, "-k", "10", "--json", "-q"))
    scores = res["datasets"]["data"]["scores"]
    assert 0.0 <= scores["ndcg_at_10"] <= 1.0 and res["datasets"]["data"]["num_queries"] == 12
    res = js(mbret("eval", EXAMPLES, "--index", example_index, "-k", "10", "--json", "-q",
                   "--output-dir", tmp_path / "ev"))
    assert res["datasets"]["data"]["scores"]["ndcg_at_10"] > 0.8  # MiniLM on the example corpus
    assert (tmp_path / "ev" / "data" / "results.json").is_file()
    r = mbret("eval", EXAMPLES, _beir(tmp_path), "--index", example_index, "-q")  # the 2nd is another corpus
    assert r.exit_code == 2 and "not the 2 of beir" in r.stderr, r.stderr


def test_bench_list_and_unknown(monkeypatch):
    out = ok(mbret("bench", "--list"))
    assert "encode" in out
    r = mbret("bench", "no-such-bench")
    assert r.exit_code == 2 and "unknown benchmark" in r.stderr
    import mbert_retrieval.eval.bench_encode as be

    seen: list = []
    monkeypatch.setattr(be, "main", lambda argv=None: seen.append(argv))
    ok(mbret("bench", "encode", "--n", "5", "--json"))
    assert seen == [["--n", "5", "--json"]]


def test_missing_optional_dependency_names_the_extra(tmp_path, tiny_modernbert, monkeypatch):
    """Without FAISS (a plain `pip install mbert-retrieval`, no [cpu] extra) the error says what to install."""
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ModuleNotFoundError
    r = mbret("index", _jsonl(tmp_path), tmp_path / "i", "--model", tiny_modernbert, "--index", "hnsw")
    assert r.exit_code == 1 and "mbert-retrieval[cpu]" in r.stderr, r.stderr
