import json

import numpy as np
import pytest

from mbert_retrieval.train import load_jsonl_examples
from mbert_retrieval.train.mining import ExactSearcher, mine_beir, mine_hard_negatives, write_mined_jsonl

CORPUS = {f"d{i}": f"document number {i}" for i in range(30)}


def _search(order_by_query):
    """A fake index: query text -> fixed ranking of corpus positions (score = -rank)."""
    def search(queries, k):
        idx = np.array([order_by_query[q][:k] for q in queries])
        return -np.arange(idx.shape[1], dtype=np.float32)[None].repeat(len(queries), 0), idx
    return search


def test_skips_positives_and_respects_rank_range(tmp_path):
    queries = {"q1": "first", "q2": "second"}
    ranking = list(range(30))
    qrels = {"q1": {"d2": 1, "d12": 1, "d11": 0}, "q2": {"d5": 2}}
    mined = mine_hard_negatives(queries, CORPUS, qrels, _search({"first": ranking, "second": ranking[::-1]}),
                                num_negatives=3, range_min=10, range_max=20, teacher_scores="retriever",
                                show_progress=False)
    by_q = {}
    for m in mined:
        by_q.setdefault(m.query_id, []).append(m)
    assert sorted(m.positive_id for m in by_q["q1"]) == ["d12", "d2"]
    assert by_q["q1"][0].negative_ids == ["d10", "d11", "d13"]  # ranks 10.. without the positive d12
    assert by_q["q2"][0].negative_ids == ["d19", "d18", "d17"]  # reversed ranking: ranks 10, 11, 12
    assert by_q["q1"][0].scores[1:] == [-10.0, -11.0, -13.0]
    rnd = mine_hard_negatives(queries, CORPUS, qrels, _search({"first": ranking, "second": ranking}),
                              num_negatives=4, range_min=10, range_max=20, sampling="random", seed=1,
                              show_progress=False)
    for m in rnd:
        assert all(10 <= int(d[1:]) < 20 for d in m.negative_ids)
        assert not set(m.negative_ids) & {d for d, s in qrels[m.query_id].items() if s > 0}
        assert len(set(m.negative_ids)) == 4
    path = write_mined_jsonl(mined, tmp_path / "mined.jsonl")
    ex = load_jsonl_examples(path)
    assert len(ex) == 3 and ex[0].negatives == [CORPUS[d] for d in mined[0].negative_ids] and ex[0].scores


class FakeCrossEncoder:
    def predict(self, pairs, batch_size=32, show_progress_bar=False):
        return [0.99 if doc.endswith(" 11") else (0.9 if doc.endswith(" 2") else 0.1) for _, doc in pairs]


def test_cross_encoder_filter():
    mined = mine_hard_negatives({"q": "x"}, CORPUS, {"q": {"d2": 1}}, _search({"x": list(range(30))}),
                                num_negatives=3, range_min=10, range_max=20, cross_encoder=FakeCrossEncoder(),
                                teacher_scores="cross_encoder", show_progress=False)
    assert mined[0].negative_ids == ["d10", "d12", "d13"]  # d11 scores above 0.95 x the positive's 0.9
    assert mined[0].scores == pytest.approx([0.9, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="range_min"):
        mine_hard_negatives({}, CORPUS, {}, _search({}), range_min=5, range_max=5)


def test_exact_searcher_and_mine_beir(tiny_modernbert, tmp_path):
    from mbert_retrieval import BiEncoder
    from mbert_retrieval.colbert import ColBERT

    docs = ["red apples", "green pears", "blue sky", "red apples"]
    dense = BiEncoder.from_pretrained(tiny_modernbert, device="cpu")
    scores, idx = ExactSearcher(dense, docs, show_progress=False).search(["red apples", "blue sky"], 3)
    assert idx.shape == (2, 3) and set(idx[0, :2]) == {0, 3} and idx[1, 0] == 2
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    colbert = ColBERT.from_pretrained(tiny_modernbert, dim=8, device="cpu")
    _, idx = ExactSearcher(colbert, docs, show_progress=False).search(["blue sky"], 4)
    assert idx.shape == (1, 4) and sorted(idx[0]) == [0, 1, 2, 3]

    (tmp_path / "b" / "qrels").mkdir(parents=True)
    (tmp_path / "b" / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                                         for i, t in enumerate(docs)))
    (tmp_path / "b" / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "red fruit"}) + "\n")
    (tmp_path / "b" / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq\td0\t1\n")
    out = mine_beir(dense, tmp_path / "b", tmp_path / "m.jsonl", num_negatives=2, range_min=0, range_max=4,
                    show_progress=False)
    ex = load_jsonl_examples(out)
    # d3 has the positive's text: it is a duplicate of the positive and is never a negative
    assert len(ex) == 1 and sorted(ex[0].negatives) == ["blue sky", "green pears"]
