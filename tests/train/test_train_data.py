import json

import pytest

from mbert_retrieval.data import DataError
from mbert_retrieval.train.data import epoch_batches, load_beir_examples, load_examples, load_jsonl_examples, text_key


def _bad(tmp_path, line: str):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"query": "q", "positive": "p"}\n' + line + "\n")
    with pytest.raises(DataError) as err:
        load_jsonl_examples(p)
    assert err.value.line == 2 and str(p) in str(err.value)
    return err.value


def test_jsonl_errors_name_file_and_line(tmp_path):
    _bad(tmp_path, "{not json")
    assert _bad(tmp_path, '{"query": "q"}').field == "positive"
    assert _bad(tmp_path, '{"query": 3, "positive": "p"}').field == "query"
    assert _bad(tmp_path, '{"query": "q", "positive": "p", "negatives": "n"}').field == "negatives"
    assert _bad(tmp_path, '{"query": "q", "positive": "p", "negatives": ["n"], "scores": [1]}').field == "scores"
    _bad(tmp_path, "[1, 2]")


def test_pairs_triples_positives(tmp_path, triples_file):
    ex = load_jsonl_examples(triples_file)
    assert len(ex) == 8 and len(ex[0].negatives) == 2 and ex[0].scores == [5.0, 1.0, 0.5]
    p = tmp_path / "multi.jsonl"
    p.write_text(json.dumps({"query": "q", "positives": ["a", "b"]}) + "\n")
    ex = load_examples([p])
    assert [e.positive for e in ex] == ["a", "b"]
    assert ex[0].positive_keys == {text_key("a"), text_key("b")}


def test_beir_folder(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "T", "text": f"doc {i}"}) + "\n"
                                                   for i in range(3)))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "query one"}) + "\n")
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq1\td1\t0\nq1\td2\t2\n")
    ex = load_beir_examples(tmp_path, "train")
    assert sorted(e.positive for e in ex) == ["T doc 0", "T doc 2"] and ex[0].query == "query one"
    with pytest.raises(DataError, match="test"):
        load_beir_examples(tmp_path, "test")


def test_batches_layout_and_determinism(triples_file):
    ex = load_examples([triples_file])
    b1 = epoch_batches(ex, 3, 2, seed=1, epoch=0, need_scores=True)
    b2 = epoch_batches(ex, 3, 2, seed=1, epoch=0, need_scores=True)
    assert [b.queries for b in b1] == [b.queries for b in b2] and len(b1) == 3 and len(b1[-1]) == 2
    b = b1[0]
    assert b.group_size == 3 and len(b.documents) == 9 and b.teacher_scores.shape == (3, 3)
    by_q = {e.query: e for e in ex}
    assert all(b.documents[3 * i] == by_q[q].positive for i, q in enumerate(b.queries))
    # two processes: disjoint halves of the same global batch, equal sizes (drop_last)
    r0 = epoch_batches(ex, 2, 0, 1, 0, rank=0, world_size=2)
    r1 = epoch_batches(ex, 2, 0, 1, 0, rank=1, world_size=2)
    assert len(r0) == len(r1) == 2 and not set(r0[0].queries) & set(r1[0].queries)
    # more negatives than available: cycled; none available: drawn from other documents
    assert len(epoch_batches(ex, 2, 5, 1, 0)[0].documents) == 12
    pairs = load_examples([triples_file])
    for e in pairs:
        e.negatives, e.scores = [], None
    batch = epoch_batches(pairs, 4, 1, 1, 0)[0]
    assert all(batch.documents[2 * i + 1] != batch.documents[2 * i] for i in range(4))
    with pytest.raises(DataError, match="teacher scores"):
        epoch_batches(pairs, 4, 1, 1, 0, need_scores=True)
