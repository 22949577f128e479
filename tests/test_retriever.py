"""The `Retriever` Python API: build / open / search / add / update / delete, model recording, mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbert_retrieval import Result, Retriever
from mbert_retrieval.data import DataError, read_qrels_tsv, read_queries_file
from mbert_retrieval.index import IndexMismatchError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"


@pytest.fixture(scope="module")
def example_retriever(tmp_path_factory, minilm_path):
    """The bundled example corpus indexed with the real all-MiniLM-L6-v2 (51 documents: a few seconds)."""
    r = Retriever.build(tmp_path_factory.mktemp("ex") / "idx", EXAMPLES / "corpus.jsonl", model=minilm_path)
    yield r
    r.close()


def test_example_corpus_is_a_small_beir_folder():
    lines = [json.loads(x) for x in (EXAMPLES / "corpus.jsonl").read_text().splitlines()]
    assert 40 <= len(lines) <= 60
    assert all({"_id", "title", "text", "metadata"} <= set(d) for d in lines)
    assert len({d["metadata"]["topic"] for d in lines}) >= 6
    queries = read_queries_file(EXAMPLES / "queries.jsonl")
    qrels = read_qrels_tsv(EXAMPLES / "qrels" / "test.tsv")
    ids = {d["_id"] for d in lines}
    assert set(qrels) == set(queries) and len(queries) >= 10
    assert all(set(judged) <= ids for judged in qrels.values())


def test_example_corpus_ranks_sensibly_with_minilm(example_retriever):
    """With the real model, the judged document is the top hit for (nearly) every example query."""
    queries = read_queries_file(EXAMPLES / "queries.jsonl")
    qrels = read_qrels_tsv(EXAMPLES / "qrels" / "test.tsv")
    results = example_retriever.search(list(queries.values()), k=3)
    top1 = sum(next(iter(qrels[qid])) == res[0].id for qid, res in zip(queries, results))
    top3 = sum(next(iter(qrels[qid])) in [r.id for r in res] for qid, res in zip(queries, results))
    assert top1 >= len(queries) - 1, top1
    assert top3 == len(queries)


def test_search_shapes_filters_and_results(example_retriever):
    one = example_retriever.search("how long do I boil an egg", k=3)
    assert isinstance(one, list) and isinstance(one[0], Result)
    assert one[0].id == "cook-eggs" and one[0].doc_id == "cook-eggs"
    assert one[0].title == "Boiling eggs" and one[0].metadata == {"topic": "cooking", "year": 2018}
    assert one[0].score >= one[1].score >= one[2].score
    assert set(one[0].to_dict()) == {"id", "score", "text", "title", "metadata", "window"}
    many = example_retriever.search(["boil an egg", "black holes"], k=2)
    assert len(many) == 2 and all(len(row) == 2 for row in many)
    assert example_retriever.search([], k=2) == []
    hist = example_retriever.search("ancient engineering", k=10, filter={"topic": "history", "year": {"$lt": 1000}})
    assert hist and all(r.metadata["topic"] == "history" and r.metadata["year"] < 1000 for r in hist)
    assert example_retriever.search("eggs", k=5, filter={"topic": "no-such-topic"}) == []
    with pytest.raises(ValueError):
        example_retriever.search("eggs", k=0)
    with pytest.raises(ValueError):
        example_retriever.search("eggs", filter={"year": {"$bogus": 1}})


def test_build_from_strings_dicts_and_documents(tmp_path, tiny_modernbert):
    from mbert_retrieval.data import Document

    r = Retriever.build(tmp_path / "a", ["first text", "second text"], model=tiny_modernbert)
    assert len(r) == 2 and {d["id"] for d in r.get(["0", "1"])} == {"0", "1"}
    r.close()
    docs = [{"_id": 7, "text": "seven", "title": "T", "metadata": {"x": 1}}, Document(id="d", text="dee")]
    r = Retriever.build(tmp_path / "b", docs, model=tiny_modernbert)
    assert r.get(["7"])[0] == {"id": "7", "text": "seven", "title": "T", "metadata": {"x": 1}}
    r.close()
    with pytest.raises(DataError, match="duplicate"):
        Retriever.build(tmp_path / "c", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], model=tiny_modernbert)
    with pytest.raises(DataError, match="text"):
        Retriever.build(tmp_path / "c", [{"id": "a"}], model=tiny_modernbert)
    with pytest.raises(DataError, match="line 2"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": \n')
        Retriever.build(tmp_path / "c", bad, model=tiny_modernbert)


def test_add_update_delete_and_reopen(tmp_path, tiny_modernbert):
    r = Retriever.build(tmp_path / "idx", [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}],
                        model=tiny_modernbert)
    assert r.add([{"id": "c", "text": "gamma", "metadata": {"g": True}}, {"id": "a", "text": "ignored"}]) == 1
    assert r.get(["a"])[0]["text"] == "alpha"  # add skips existing ids
    assert r.update([{"id": "a", "text": "alpha two"}]) == 1
    assert r.get(["a"])[0]["text"] == "alpha two"
    assert r.delete(["b", "unknown"]) == 1
    assert r.delete("c") == 1
    assert len(r) == 1
    r.close()
    with Retriever.open(tmp_path / "idx") as r2:  # the model is reloaded from the recorded path
        assert Path(r2.model.model_id) == Path(tiny_modernbert).resolve()
        assert [x.id for x in r2.search("alpha", k=5)] == ["a"]
        assert r2.info()["model_path"] == str(Path(tiny_modernbert).resolve())
    sidecar = json.loads((tmp_path / "idx" / "retriever.json").read_text())
    assert sidecar["model_path"] == str(Path(tiny_modernbert).resolve()) and sidecar["kind"] == "dense"


def test_model_mismatch_is_a_clear_error(tmp_path, tiny_modernbert, minilm_path):
    Retriever.build(tmp_path / "idx", ["some text"], model=tiny_modernbert).close()
    with pytest.raises(IndexMismatchError, match="built with model"):
        Retriever.open(tmp_path / "idx", model=minilm_path)
    with pytest.raises(IndexMismatchError, match="colbert"):
        Retriever.build(tmp_path / "idx", ["some text"], model=tiny_modernbert, kind="colbert")
    with pytest.raises(IndexMismatchError):  # same model, other index type
        Retriever.build(tmp_path / "idx", ["some text"], model=tiny_modernbert, index_type="hnsw")


def test_recorded_model_path_missing_gives_clear_error(tmp_path, tiny_modernbert):
    import shutil

    model_copy = tmp_path / "model"
    shutil.copytree(tiny_modernbert, model_copy)
    Retriever.build(tmp_path / "idx", ["x y z"], model=str(model_copy)).close()
    shutil.rmtree(model_copy)
    with pytest.raises(FileNotFoundError, match="pass model="):
        Retriever.open(tmp_path / "idx")
    with Retriever.open(tmp_path / "idx", model=_same_model_elsewhere(tiny_modernbert, model_copy)) as r:
        assert len(r) == 1


def _same_model_elsewhere(src, recorded_path):
    """The model files loaded from another folder but presented under the recorded id."""
    from mbert_retrieval.hub import load_model

    model = load_model(src, kind="dense")
    model.model_id = str(Path(recorded_path).resolve())
    return model


def test_offline_fallback_model_is_recorded_and_reopens(tmp_path, minilm_path, monkeypatch):
    from mbert_retrieval import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.0: False)
    if not hub.resolve_model(None, "dense").fallback:
        pytest.skip("the default model is cached locally: no fallback to test")
    r = Retriever.build(tmp_path / "idx", ["photosynthesis makes sugar", "black holes trap light"])
    assert r.model.model_id == hub.FALLBACK_MODEL_ID
    assert "falling back" in r.fallback_message
    r.close()
    sidecar = json.loads((tmp_path / "idx" / "retriever.json").read_text())
    assert sidecar["fallback"] is True and Path(sidecar["model_path"]).is_dir()
    with Retriever.open(tmp_path / "idx") as r2:
        assert r2.model.model_id == hub.FALLBACK_MODEL_ID
        assert r2.search("how do plants make sugar", k=1)[0].id == "0"


def test_colbert_retriever(tmp_path, tiny_modernbert):
    r = Retriever.build(tmp_path / "idx", [{"id": "a", "text": "red apples"}, {"id": "b", "text": "blue sky"}],
                        model=tiny_modernbert, kind="colbert")
    assert r.model.kind == "colbert" and r.index.manifest.kind == "colbert"
    assert len(r.search("apples", k=2)) == 2
    r.close()
    with Retriever.open(tmp_path / "idx") as r2:  # same seeded projection: same model id and dim
        assert r2.model.kind == "colbert" and len(r2.search("sky", k=1)) == 1


def test_open_options_and_info(tmp_path, tiny_modernbert):
    """`hybrid` given at open is this session's mode, reported apart from the index's stored default;
    `load_model=False` and an explicit model exclude each other."""
    import numpy as np

    Retriever.build(tmp_path / "idx", ["alpha beta", "gamma delta"], model=tiny_modernbert).close()
    with Retriever.open(tmp_path / "idx", hybrid=True) as r:
        info = r.info()
        assert info["hybrid"] is True and info["hybrid_default"] is False
        assert len(r.search("alpha", k=np.int64(1))) == 1  # numpy integers are integers
        with pytest.raises(ValueError, match="k must be"):
            r.search("alpha", k=1.5)
    with pytest.raises(ValueError, match="load_model"):
        Retriever.open(tmp_path / "idx", model=tiny_modernbert, load_model=False)
    with Retriever.open(tmp_path / "idx", load_model=False) as r:
        assert r.model is None and "model=None" in repr(r) and len(r) == 2


@pytest.mark.parametrize(
    "doc, field",
    [
        ({"id": "a", "text": "bad \ud800 text"}, "text"),
        ({"id": "a", "text": "ok", "title": "\udfff"}, "title"),
        ({"id": "a", "text": "ok", "metadata": {"x": float("nan")}}, "metadata"),
        ({"id": "a", "text": "ok", "metadata": {"tags": ["\ud800"]}}, "metadata"),
    ],
)
def test_python_documents_are_checked_like_files(doc, field):
    """Documents given as Python objects get the readers' checks (lone surrogates, non-finite numbers)."""
    from mbert_retrieval.data import DataError
    from mbert_retrieval.retriever import normalize_documents

    with pytest.raises(DataError) as err:
        normalize_documents([doc])
    assert field in str(err.value) and "document 0" in str(err.value)
