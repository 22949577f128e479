"""`mbret` on bad input and at start-up: settings checked before anything is written, no torch for
--help / info / delete, --force for foreign folders, malformed filters / options / empty queries (exit 2),
interrupted builds, messages and where the results go."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mbert_retrieval.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
runner = CliRunner()


def mbret(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def ok(result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def _corpus(tmp: Path, n: int = 6) -> Path:
    path = tmp / "docs.jsonl"
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"document number {i} about topic {i % 3}",
                                        "metadata": {"year": 2000 + i}}) + "\n" for i in range(n)))
    return path


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory, tiny_modernbert) -> Path:
    """A private copy of the tiny model, so that a test may delete it."""
    dst = tmp_path_factory.mktemp("model") / "tiny"
    shutil.copytree(tiny_modernbert, dst)
    return dst


# ---------------------------------------------------------------------------------------------- -p settings
def test_bad_setting_value_exits_2_and_writes_nothing(tmp_path, tiny_modernbert):
    idx = tmp_path / "idx"
    r = mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "--index", "hnsw", "-p", "hnsw_m=abc")
    assert r.exit_code == 2 and "-p hnsw_m: expected an integer, got 'abc'" in r.stderr, r.stderr
    assert not idx.exists()
    r = mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "--index", "hnsw", "-p", "hnsw_m=0")
    assert r.exit_code == 2 and "hnsw_m" in r.stderr and not idx.exists()
    r = mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "--index", "hnsw", "-p", "hsnw_m=8")
    assert r.exit_code == 2 and "-p hsnw_m: unknown setting; did you mean hnsw_m?" in r.stderr
    assert "valid:" in r.stderr and "ef_construction" in r.stderr and not idx.exists()


def test_bad_setting_from_python_is_refused_before_writing(tmp_path):
    from mbert_retrieval.index import Index
    from mbert_retrieval.index.structures import SettingError

    with pytest.raises(SettingError, match="expected an integer") as info:
        Index.create(tmp_path / "ix", "dense", "hnsw", model_id="m", dim=8, hnsw_m="abc")
    assert isinstance(info.value, ValueError) and info.value.setting == "hnsw_m"
    with pytest.raises(SettingError, match="did you mean nbits"):
        Index.create(tmp_path / "ix", "colbert", "plaid", model_id="m", dim=8, nbit=2)
    with pytest.raises(SettingError, match="true or false"):
        Index.create(tmp_path / "ix", "dense", "flat", model_id="m", dim=8, rerank="yes")
    assert not (tmp_path / "ix").exists()


def test_bad_search_setting_exits_2(tmp_path, tiny_modernbert):
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "--index", "hnsw", "-q"))
    r = mbret("search", idx, "number", "-p", "ef_search=abc")
    assert r.exit_code == 2 and "-p ef_search: expected an integer, got 'abc'" in r.stderr, r.stderr
    r = mbret("search", idx, "number", "-p", "ef_serch=3")
    assert r.exit_code == 2 and "did you mean ef_search?" in r.stderr
    ok(mbret("search", idx, "number", "-p", "ef_search=16"))


# ---------------------------------------------------------------------------------------------- start-up
def _imports(*args: object) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `mbret ARGS` in a fresh interpreter; returns the process and the top-level modules it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mbert_retrieval.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    mods = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
            if line.startswith("import time:")}
    return proc, mods


def test_help_does_not_import_torch():
    proc, mods = _imports("--help")
    assert proc.returncode == 0 and "index" in proc.stdout
    assert "torch" not in mods and "transformers" not in mods


@pytest.mark.parametrize("index_type", ["flat", "plaid"])
def test_info_and_delete_do_not_import_torch(tmp_path, model_copy, index_type):
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", model_copy, "--index", index_type, "-q"))
    proc, mods = _imports("info", idx, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["n_documents"] == 6 and "torch" not in mods
    proc, mods = _imports("delete", idx, "d1", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["deleted"] == 1 and "torch" not in mods and "transformers" not in mods


def test_delete_without_the_model_keeps_bm25_current(tmp_path, model_copy):
    from mbert_retrieval.index.docstore import DocStore
    from mbert_retrieval.index.lexical import LexicalIndex

    model = tmp_path / "model"
    shutil.copytree(model_copy, model)
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", model, "--hybrid", "-q"))
    shutil.rmtree(model)  # the recorded model folder is gone
    res = json.loads(ok(mbret("delete", idx, "d0", "d2", "--json")))
    assert res["deleted"] == 2 and res["documents"] == 4
    store = DocStore(idx / "docs.sqlite", readonly=True)  # BM25 (FTS5 in the document store) follows them
    try:
        assert LexicalIndex(store).count() == 4 and not (idx / "bm25").exists()
    finally:
        store.close()
    assert json.loads(ok(mbret("info", idx, "--json")))["n_documents"] == 4


# ---------------------------------------------------------------------------------------------- output folder
def test_non_empty_folder_that_is_no_index_needs_force(tmp_path, tiny_modernbert):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    r = mbret("index", _corpus(tmp_path), folder, "--model", tiny_modernbert, "-q")
    assert r.exit_code == 2 and "--force" in r.stderr and "thesis.tex" in r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]
    ok(mbret("index", _corpus(tmp_path), folder, "--model", tiny_modernbert, "-q", "--force"))
    assert (folder / "manifest.json").is_file() and (folder / "thesis.tex").read_text() == "precious"
    ok(mbret("index", _corpus(tmp_path), folder, "--model", tiny_modernbert, "-q"))  # an index now: resumes
    empty = tmp_path / "empty"
    empty.mkdir()
    ok(mbret("index", _corpus(tmp_path), empty, "--model", tiny_modernbert, "-q"))


# ---------------------------------------------------------------------------------------------- bad input
def test_malformed_filters_and_empty_queries_exit_2(tmp_path, tiny_modernbert):
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "-q"))
    for typo in ("year>>2", "year==2001", "year=>2"):
        r = mbret("search", idx, "number", "--filter", typo)
        assert r.exit_code == 2 and "malformed operator" in r.stderr and "field>=N" in r.stderr, (typo, r.stderr)
    assert len(json.loads(ok(mbret("search", idx, "number", "--filter", "year>=2003", "--json")))["results"]) == 3
    r = mbret("search", idx, "number", "--filter", "yaer>=2003")  # a field no document has
    assert r.exit_code == 2 and "yaer" in r.stderr and "year" in r.stderr
    for empty in ("", "   "):
        r = mbret("search", idx, empty)
        assert r.exit_code == 2 and "empty" in r.stderr
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tnumber one\nq2\t \n")
    r = mbret("search", idx, "--queries", queries)
    assert r.exit_code == 2 and "'q2'" in r.stderr and "empty" in r.stderr
    r = mbret("search", idx, "number", "--filter", '{"year": 1')
    assert r.exit_code == 2 and "at at" not in r.stderr


def test_eval_unknown_option_exits_2_with_hint(tiny_modernbert):
    r = mbret("eval", EXAMPLES, "--model", tiny_modernbert, "--option", "query_batch_sise=8", "-q")
    assert r.exit_code == 2 and "did you mean query_batch_size?" in r.stderr, r.stderr
    r = mbret("eval", EXAMPLES, "--model", tiny_modernbert, "--option", "query_batch_size=many", "-q")
    assert r.exit_code == 2 and "expected an integer" in r.stderr
    r = mbret("eval", EXAMPLES, "--model", tiny_modernbert, "--option", "split=dev", "-q")
    assert r.exit_code == 2 and "--split" in r.stderr


# ---------------------------------------------------------------------------------------------- output
def test_eval_table_on_stdout_and_singular_message(tmp_path, tiny_modernbert):
    r = mbret("eval", EXAMPLES, "--model", tiny_modernbert, "-k", "10")
    assert "nDCG@10" in ok(r) and "nDCG@10" not in r.stderr
    one = tmp_path / "one.jsonl"
    one.write_text('{"_id": "a", "text": "hello"}\n')
    out = ok(mbret("index", one, tmp_path / "idx", "--model", tiny_modernbert, "-q"))
    assert "indexed 1 document into" in out


# ---------------------------------------------------------------------------------------------- interrupted builds
def test_interrupted_build_says_how_to_finish_it(tmp_path, tiny_modernbert, encode_counter):
    idx = tmp_path / "idx"
    encode_counter.interrupt_at(2)
    args = ("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "--index", "hnsw", "-p", "hnsw_m=8",
            "--chunk-size", "2", "-q")
    assert mbret(*args).exit_code == 130
    for cmd in (("search", idx, "number"), ("eval", EXAMPLES, "--index", idx, "-q")):
        r = mbret(*cmd)
        assert r.exit_code == 2, r.stderr
        assert "interrupted build" in r.stderr and "finalize" not in r.stderr
        assert (f"re-run `mbret index CORPUS {idx} --model {Path(tiny_modernbert).resolve()} --kind dense "
                "--index hnsw -p hnsw_m=8 --chunk-size 2`") in r.stderr.replace("\n", " "), r.stderr
    info = json.loads(ok(mbret("info", idx, "--json")))
    assert info["state"] == "building" and f"re-run `mbret index CORPUS {idx}" in info["resume_hint"]
    ok(mbret(*args))
    ok(mbret("search", idx, "number"))


# ---------------------------------------------------------------------------------------------- input formats
def test_csv_columns_and_txt_split(tmp_path, tiny_modernbert):
    table = tmp_path / "docs.csv"
    table.write_text("key,body,heading,year\nk1,first body,One,2001\nk2,second body,Two,2002\n")
    res = json.loads(ok(mbret("index", table, tmp_path / "csv", "--model", tiny_modernbert, "--text-column", "body",
                              "--id-column", "key", "--title-column", "heading", "--json", "-q")))
    assert res["documents"] == 2 and res["format"] == "csv"
    hit = json.loads(ok(mbret("search", tmp_path / "csv", "body", "-k", "5", "--json")))["results"]
    assert {h["id"] for h in hit} == {"k1", "k2"} and {h["title"] for h in hit} == {"One", "Two"}
    r = mbret("index", _corpus(tmp_path), tmp_path / "x", "--model", tiny_modernbert, "--text-column", "body")
    assert r.exit_code == 2 and "--text-column" in r.stderr and ".csv" in r.stderr and not (tmp_path / "x").exists()
    r = mbret("index", table, tmp_path / "y", "--model", tiny_modernbert, "--text-column", "nope")
    assert r.exit_code == 2 and "nope" in r.stderr

    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nline two\n\nline three\n")
    by_line = json.loads(ok(mbret("index", notes, tmp_path / "l", "--model", tiny_modernbert, "--txt-split", "line",
                                  "--json", "-q")))
    by_par = json.loads(ok(mbret("index", notes, tmp_path / "p", "--model", tiny_modernbert, "--txt-split",
                                 "paragraph", "--json", "-q")))
    assert (by_line["documents"], by_line["text_unit"]) == (3, "line")
    assert (by_par["documents"], by_par["text_unit"]) == (2, "paragraph")
    assert mbret("index", notes, tmp_path / "z", "--txt-split", "sentence").exit_code == 2


def test_index_and_add_summarise_what_was_read(tmp_path, tiny_modernbert):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\nshort note")
    (folder / "long.txt").write_text(" ".join(f"word{i}" for i in range(2000)))  # past 512 tokens
    (folder / "blank.txt").write_text("   \n")
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    res = json.loads(ok(mbret("index", folder, tmp_path / "idx", "--model", tiny_modernbert, "--json", "-q",
                              "--no-windows")))
    assert res["documents"] == 2 and res["blank_skipped"] == 1
    assert [Path(f["path"]).name for f in res["files_skipped"]] == ["logo.png"]
    assert res["truncated"] == 1 and res["max_tokens"] > 0
    # windows (the default): nothing is cut, the long file becomes several rows
    res = json.loads(ok(mbret("index", folder, tmp_path / "idx-w", "--model", tiny_modernbert, "--json", "-q")))
    assert res["truncated"] is None and res["split_documents"] == 1 and res["windows"] > 2
    text = ok(mbret("index", folder, tmp_path / "idx2", "--model", tiny_modernbert, "-q", "--no-windows"))
    assert "indexed 2 documents" in text and "1 blank document skipped" in text
    assert "logo.png" in text and "truncated: 1 document longer than" in text
    res = json.loads(ok(mbret("index", folder, tmp_path / "idx3", "--model", tiny_modernbert, "--max-file-bytes", "200",
                              "--json", "-q", "--no-windows")))
    assert sorted(Path(f["path"]).name for f in res["files_skipped"]) == ["logo.png", "long.txt"]
    assert res["documents"] == 1 and res["truncated"] == 0
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "n1", "text": "new"}\n{"_id": "n2", "text": " "}\n')
    res = json.loads(ok(mbret("add", tmp_path / "idx", more, "--json", "-q")))
    assert res["added"] == 1 and res["blank_skipped"] == 1 and res["truncated"] == 0


# ---------------------------------------------------------------------------------------------- hybrid per call
def test_hybrid_flags_never_change_the_index(tmp_path, tiny_modernbert):
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "-q"))
    before = (idx / "retriever.json").read_text()
    ok(mbret("search", idx, "number 3", "--hybrid"))
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    shutil.copy(_corpus(tmp_path), beir / "corpus.jsonl")
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "number 3"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t1\n")
    hybrid = json.loads(ok(mbret("eval", beir, "--index", idx, "--hybrid", "-k", "5", "--json", "-q")))
    plain = json.loads(ok(mbret("eval", beir, "--index", idx, "--no-hybrid", "-k", "5", "--json", "-q")))
    assert hybrid["datasets"]["beir"]["num_queries"] == plain["datasets"]["beir"]["num_queries"] == 1
    assert (idx / "retriever.json").read_text() == before and not (idx / "bm25").exists()
    assert json.loads(ok(mbret("info", idx, "--json")))["hybrid"] is False
    r = mbret("eval", beir, "--model", tiny_modernbert, "--hybrid")
    assert r.exit_code == 2 and "--index" in r.stderr


@pytest.mark.parametrize("name,content", [
    ("broken.jsonl.gz", b"\x1f\x8b\x08\x00garbage, not deflate"),  # corrupt gzip
    ("deep.jsonl", b'{"_id": "a", "text": "t", "metadata": ' + b'{"x": ' * 5000 + b"1" + b"}" * 5001 + b"\n"),
    ("surrogate.jsonl", b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "bad \\ud800 text"}\n'),
])
def test_bad_corpus_files_exit_2_naming_the_file(tmp_path, name, content):
    bad = tmp_path / name
    bad.write_bytes(content)
    r = mbret("index", bad, tmp_path / "idx")
    assert r.exit_code == 2, r.stderr
    assert str(bad) in r.stderr and "Traceback" not in r.stderr and not (tmp_path / "idx").exists()


def test_json_error_messages_read_well(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": "unterminated\n')
    r = mbret("index", bad, tmp_path / "idx")
    assert r.exit_code == 2 and f"{bad}:2:" in r.stderr
    assert "starting at column" in r.stderr and "at at" not in r.stderr, r.stderr


def test_ctrl_c_promises_a_resume_only_where_there_is_one(tmp_path, tiny_modernbert, monkeypatch):
    from mbert_retrieval.retriever import Retriever

    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "-q"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Retriever, "search", interrupted)
    r = mbret("search", idx, "number")
    assert r.exit_code == 130 and "interrupted" in r.stderr and "resume" not in r.stderr


# ---------------------------------------------------------------------------------------------- found from outside
def test_index_with_another_corpus_on_a_finished_index_is_refused(tmp_path, tiny_modernbert):
    """`mbret index` on a finished index resumed with any corpus and merged it in silently."""
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "-q"))
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "-q"))  # the same corpus: a no-op
    other = tmp_path / "other.jsonl"
    other.write_text('{"_id": "x1", "text": "another corpus"}\n')
    res = mbret("index", other, idx, "--model", tiny_modernbert, "-q")
    assert res.exit_code == 2 and "mbret add" in res.stderr
    assert json.loads(ok(mbret("info", idx, "--json")))["n_documents"] == 6


def test_a_busy_index_is_refused_before_the_model_loads(tmp_path, tiny_modernbert):
    """A second writer loaded the model and read the corpus before being refused (24 s on a large input)."""
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "-q"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom mbert_retrieval.index.storage import writer_lock\n"
         f"with writer_lock({str(idx)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        more = tmp_path / "more.jsonl"
        more.write_text('{"_id": "n1", "text": "new"}\n')
        for args in (("add", idx, more, "--model", "/nonexistent/model"), ("delete", idx, "d1")):
            res = mbret(*args)  # a model that cannot load: refused before trying to load it
            assert res.exit_code == 1 and "another process is writing" in res.stderr, res.stderr
    finally:
        holder.kill()
        holder.wait()


def test_info_verify_says_what_it_checked(tmp_path, tiny_modernbert):
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "-q", "--hybrid"))
    assert "verified" not in json.loads(ok(mbret("info", idx, "--json")))
    assert "checksum" in json.loads(ok(mbret("info", idx, "--json", "--verify")))["verified"]
    assert "verified:" in ok(mbret("info", idx, "--verify"))


def test_dtype_aliases_and_add_skips_are_explained(tmp_path, tiny_modernbert):
    idx = tmp_path / "idx"
    ok(mbret("index", _corpus(tmp_path), idx, "--model", tiny_modernbert, "-q", "--dtype", "fp32"))
    assert mbret("search", idx, "topic", "--dtype", "bf16").exit_code == 0
    res = mbret("search", idx, "topic", "--dtype", "int4")
    assert res.exit_code == 2 and "--dtype" in res.stderr
    res = mbret("add", idx, _corpus(tmp_path))
    assert res.exit_code == 0 and "already in the index" in res.stderr and "--update" in res.stderr
