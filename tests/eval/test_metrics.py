"""Metrics: hand-computed cases, trec_eval tie order, agreement with BEIR's evaluator, TREC run files."""

from __future__ import annotations

import copy
import math
import random

import pytest

from mbert_retrieval.data import DataError
from mbert_retrieval.eval.metrics import evaluate_run, load_trec_run, ranked, save_trec_run, truncate_run

L2 = math.log2


def test_hand_computed_three_doc_run():
    qrels = {"q1": {"d1": 1, "d3": 1}}
    run = {"q1": {"d2": 0.9, "d1": 0.8, "d3": 0.7}}
    r = evaluate_run(qrels, run, k_values=(1, 3, 10))
    idcg = 1 + 1 / L2(3)
    assert r["ndcg_at_10"] == pytest.approx((1 / L2(3) + 1 / L2(4)) / idcg)  # 0.6934
    assert r["ndcg_at_1"] == 0.0
    assert r["mrr_at_10"] == pytest.approx(0.5)
    assert r["recall_at_1"] == 0.0 and r["recall_at_3"] == 1.0
    assert r["precision_at_3"] == pytest.approx(2 / 3)
    assert r["map_at_10"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r.per_query["q1"]["ndcg_at_10"] == r["ndcg_at_10"] and r.num_queries == 1


def test_graded_relevance_uses_linear_gain():
    r = evaluate_run({"q": {"a": 2, "b": 1}}, {"q": {"b": 0.9, "a": 0.5}}, k_values=(10,))
    assert r["ndcg_at_10"] == pytest.approx((1 + 2 / L2(3)) / (2 + 1 / L2(3)))  # trec_eval: gain = grade


def test_mrr_is_truncated_at_10():
    run = {"q": {f"n{i:02d}": 1.0 - i / 100 for i in range(10)} | {"rel": 0.5}}  # relevant doc at rank 11
    r = evaluate_run({"q": {"rel": 1}}, run, k_values=(10, 100), mrr_k_values=(10, 100))
    assert r["mrr_at_10"] == 0.0
    assert r["mrr_at_100"] == pytest.approx(1 / 11)
    assert r["recall_at_10"] == 0.0 and r["recall_at_100"] == 1.0


def test_means_over_all_judged_queries():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0}, "q9": {"a": 1.0}}  # q2 has no results (scores 0), q9 has no judgments (ignored)
    r = evaluate_run(qrels, run, k_values=(10,))
    assert r["ndcg_at_10"] == pytest.approx(0.5) and r["mrr_at_10"] == pytest.approx(0.5)
    assert set(r.per_query) == {"q1", "q2"} and r.per_query["q2"]["ndcg_at_10"] == 0.0
    assert r.extra["queries_without_results"] == 1


def test_ties_follow_trec_eval_doc_id_descending():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 0.5}}
    assert [d for d, _ in ranked(run["q"])] == ["b", "a", "c"]
    r = evaluate_run(qrels, run, k_values=(1, 10))
    assert r["mrr_at_10"] == 0.5 and r["ndcg_at_1"] == 0.0
    # truncation for MRR uses the same order: top-1 is "b"
    assert truncate_run(run, 1) == {"q": {"b": 1.0}}
    assert evaluate_run(qrels, run, k_values=(1,), mrr_k_values=(1,))["mrr_at_1"] == 0.0
    # dict order of the run does not matter
    flipped = {"q": dict(reversed(list(run["q"].items())))}
    assert evaluate_run(qrels, flipped).scores == evaluate_run(qrels, run).scores


def test_ignore_identical_ids_and_nan():
    qrels = {"q1": {"d": 1}}
    run = {"q1": {"q1": 2.0, "d": 1.0}}
    assert evaluate_run(qrels, run)["mrr_at_10"] == 0.5
    assert evaluate_run(qrels, run, ignore_identical_ids=True)["mrr_at_10"] == 1.0
    with pytest.raises(ValueError, match="NaN"):
        evaluate_run(qrels, {"q1": {"d": float("nan")}})
    with pytest.raises(ValueError):
        evaluate_run({}, run)


def _random_case(seed: int, n_queries: int = 40, n_docs: int = 300):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    qrels = {f"q{q}": {d: rng.choice([0, 1, 1, 2]) for d in rng.sample(docs, rng.randint(1, 6))}
             for q in range(n_queries)}
    run = {}
    for q in qrels:  # unique scores: no ties, so every implementation ranks identically
        cands = rng.sample(docs, 150)
        scores = rng.sample(range(10**6), len(cands))
        run[q] = {d: s / 10**6 for d, s in zip(cands, scores)}
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_beir_evaluate(seed):
    from beir.retrieval.evaluation import EvaluateRetrieval

    qrels, run = _random_case(seed)
    ks = [1, 3, 5, 10, 100]
    ours = evaluate_run(qrels, run, k_values=ks, mrr_k_values=ks).beir()
    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(qrels, copy.deepcopy(run), ks,
                                                               ignore_identical_ids=False)
    for theirs in (ndcg, _map, recall, precision):
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, abs=1e-5), key  # BEIR rounds to 5 decimals
    # BEIR's MRR@k: 1/rank of the first doc with score > 0 in the top k, averaged over the qrels queries;
    # same definition as recip_rank (relevance level 1) on the run truncated to k when grades are integers >= 0
    mrr = EvaluateRetrieval.evaluate_custom(qrels, copy.deepcopy(run), ks, metric="mrr")
    for key, value in mrr.items():
        assert ours[key] == pytest.approx(value, abs=1e-5), key
    assert ours["NDCG@10"] > 0  # the case is not degenerate


def test_trec_run_roundtrip(tmp_path):
    from beir.util import load_runfile

    run = {"q2": {"b": 0.5, "a": 0.5, "c": 1 / 3}, "q1": {"x": -1e-7}}
    path = save_trec_run(run, tmp_path / "out" / "run.trec", tag="exp1")
    lines = path.read_text().splitlines()
    assert lines[0] == "q2 Q0 b 1 0.5 exp1" and lines[1] == "q2 Q0 a 2 0.5 exp1"
    assert lines[2].split()[:4] == ["q2", "Q0", "c", "3"]
    assert load_trec_run(path) == run  # full float precision
    assert load_runfile(str(path)) == run  # readable by BEIR
    assert [p.name for p in path.parent.iterdir()] == ["run.trec"]  # no temporary files left
    save_trec_run(run, path, top_k=1)
    assert len(path.read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="whitespace"):
        save_trec_run({"q 1": {"a": 1.0}}, tmp_path / "bad.trec")
    assert not (tmp_path / "bad.trec").exists()


@pytest.mark.parametrize("content, line, message", [
    ("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 0.4\n", 2, "6 fields"),
    ("q1 Q0 a 1 high t\n", 1, "number"),
    ("q1 Q0 a 1 0.5 t\n\nq1 Q0 a 2 0.4 t\n", 3, "twice"),
])
def test_load_trec_run_errors(tmp_path, content, line, message):
    p = tmp_path / "run.trec"
    p.write_text(content)
    with pytest.raises(DataError, match=message) as exc:
        load_trec_run(p)
    assert exc.value.line == line and str(p) in str(exc.value)
