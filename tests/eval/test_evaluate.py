"""End-to-end evaluation with tiny deterministic fake models on a slice of real SciFact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from mbert_retrieval.data import document_text
from mbert_retrieval.eval.evaluate import EmbeddingCache, EvalConfig, evaluate_model, exact_search
from mbert_retrieval.eval.metrics import evaluate_run, load_trec_run
from mbert_retrieval.eval.results import print_results_table
from mbert_retrieval.maxsim import maxsim_rank

QUIET = {"show_progress": False}


def test_bow_beats_random_baseline(scifact_slice, fake_models):
    bow = evaluate_model(fake_models["bow"](), [scifact_slice], k=100, **QUIET)
    rnd = evaluate_model(fake_models["random"](), [scifact_slice], k=100, **QUIET)
    b, r = bow.datasets["scifact-slice"].result, rnd.datasets["scifact-slice"].result
    assert b.num_queries == 40
    assert b["ndcg_at_10"] > 0.4, b.scores
    assert r["ndcg_at_10"] < 0.15, r.scores
    assert b["ndcg_at_10"] > r["ndcg_at_10"] + 0.3
    assert b["recall_at_100"] > r["recall_at_100"]
    assert set(b.scores) >= {"ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_10"}
    assert "recall_at_1000" not in b.scores  # k=100: deeper cut-offs would be meaningless
    run = bow.datasets["scifact-slice"].run
    assert all(len(docs) == 100 for docs in run.values())
    assert evaluate_run(scifact_slice.qrels, run, b.k_values).scores == b.scores


def test_colbert_exact_search(scifact_slice, fake_models):
    model = fake_models["colbert"]()
    rep = evaluate_model(model, [scifact_slice], k=20, colbert_doc_chunk_size=64, colbert_query_batch_size=7, **QUIET)
    res = rep.datasets["scifact-slice"].result
    assert res["ndcg_at_10"] > 0.3, res.scores
    # same ranking as scoring each query against every document with maxsim_rank
    corpus = scifact_slice.corpus
    doc_ids = list(corpus)
    docs = model.encode_documents([document_text(d) for d in corpus.values()])
    for qid in list(scifact_slice.queries)[:3]:
        order, scores = maxsim_rank(model.encode_queries([scifact_slice.queries[qid]])[0], docs, k=20)
        got = rep.datasets["scifact-slice"].run[qid]
        assert list(got) == [doc_ids[i] for i in order]
        np.testing.assert_allclose(list(got.values()), scores, rtol=1e-5)


def test_result_files(tmp_path, scifact_slice, toy_beir, fake_models):
    out = tmp_path / "results"
    rep = evaluate_model(fake_models["bow"](), [scifact_slice, toy_beir], k=10, output_dir=out, **QUIET)
    assert list(rep.datasets) == ["scifact-slice", "toy"]
    for name, dr in rep.datasets.items():
        folder = out / name
        res = json.loads((folder / "results.json").read_text())
        entry = res["scores"]["test"][0]
        assert res["task_name"] == dr.task_name and res["dataset_revision"] == dr.dataset_revision
        assert res["model_name"] == "test/hashed-bow" and res["model_revision"] == "r1"
        assert res["evaluation_time"] > 0
        assert entry["main_score"] == entry["ndcg_at_10"] == pytest.approx(dr.result["ndcg_at_10"])
        assert entry["hf_subset"] == "default" and entry["languages"] == ["eng-Latn"]
        assert {"recall_at_10", "mrr_at_10", "map_at_10"} <= set(entry)
        assert res["beir"]["NDCG@10"] == entry["ndcg_at_10"]
        assert load_trec_run(folder / "run.trec") == dr.run
        per_query = json.loads((folder / "per_query.json").read_text())
        assert set(per_query) == set(dr.result.per_query)
    summary = json.loads((out / "summary.json").read_text())
    nd = [rep.datasets[n].result["ndcg_at_10"] for n in rep.datasets]
    assert summary["average"]["NDCG@10"] == pytest.approx(sum(nd) / 2)
    assert rep.average["ndcg_at_10"] == pytest.approx(sum(nd) / 2)
    assert set(summary["datasets"]) == {"scifact-slice", "toy"}
    # MTEB's results-repository layout: <model>/<revision>/<TaskName>.json + model_meta.json
    mteb = out / "mteb" / "test__hashed-bow" / "r1"
    assert rep.files["mteb"] == mteb
    assert sorted(p.name for p in mteb.iterdir()) == sorted(
        [f"{rep.datasets[n].task_name}.json" for n in rep.datasets] + ["model_meta.json"])
    for dr in rep.datasets.values():
        assert json.loads((mteb / f"{dr.task_name}.json").read_text()) == \
            json.loads((out / dr.name / "results.json").read_text())
    meta = json.loads((mteb / "model_meta.json").read_text())
    assert meta["name"] == "test/hashed-bow" and meta["revision"] == "r1" and "similarity_fn_name" in meta
    # the terminal table has one row per dataset and an average row
    console = Console(record=True, width=120)
    print_results_table({n: r.result for n, r in rep.datasets.items()}, console=console)
    text = console.export_text()
    assert "scifact-slice" in text and "toy" in text and "Average" in text and "nDCG@10" in text


def test_resume_from_cache(tmp_path, scifact_slice, fake_models):
    n = len(scifact_slice.corpus)
    opts = dict(k=50, cache_dir=tmp_path / "cache", cache_chunk_size=100, **QUIET)
    reference = evaluate_model(fake_models["bow"](), [scifact_slice], k=50, **QUIET)

    interrupted = fake_models["bow"](fail_after=2)  # dies while encoding the third chunk
    with pytest.raises(RuntimeError, match="simulated interruption"):
        evaluate_model(interrupted, [scifact_slice], **opts)
    chunks = sorted((tmp_path / "cache" / "embeddings").glob("*/chunk-*.safetensors"))
    assert [c.name for c in chunks] == ["chunk-000000.safetensors", "chunk-000001.safetensors"]
    assert not list((tmp_path / "cache" / "embeddings").glob("*/.*tmp"))

    resumed_model = fake_models["bow"]()
    resumed = evaluate_model(resumed_model, [scifact_slice], **opts)
    assert sum(resumed_model.document_calls) == n - 200  # only the missing chunks were encoded
    cached_model = fake_models["bow"]()
    cached = evaluate_model(cached_model, [scifact_slice], **opts)
    assert cached_model.document_calls == []  # everything from the cache
    for rep in (resumed, cached):
        assert rep.datasets["scifact-slice"].run == reference.datasets["scifact-slice"].run
        assert rep.datasets["scifact-slice"].result.scores == reference.datasets["scifact-slice"].result.scores

    # another revision (or another corpus) gets another cache entry
    other = fake_models["bow"](revision="r2")
    evaluate_model(other, [scifact_slice], **opts)
    assert sum(other.document_calls) == n
    assert len(list((tmp_path / "cache" / "embeddings").iterdir())) == 2


def test_colbert_cache_roundtrip(tmp_path, fake_models):
    model = fake_models["colbert"]()
    mats = model.encode_documents(["alpha beta", "", "gamma delta epsilon"])
    cache = EmbeddingCache(tmp_path, model, "f" * 64, 3, chunk_size=3)
    cache.save(0, mats)
    back = cache.load(0, 3)
    assert [m.shape for m in back] == [(2, 48), (0, 48), (3, 48)]
    for a, b in zip(mats, back):
        np.testing.assert_array_equal(a, b)
    assert cache.load(0, 4) is None and cache.load(1, 3) is None


def test_exact_search_ties_are_trec_eval_order():
    # five identical documents: every score ties; chunking must not change which ones make the top 3
    docs = np.tile(np.array([[1.0, 0.0]], np.float32), (5, 1))
    q = np.array([[1.0, 0.0]], np.float32)
    for chunk in (1, 2, 5):
        vals, idx = exact_search("dense", q, docs, 3, EvalConfig(doc_chunk_size=chunk))
        assert idx.tolist() == [[0, 1, 2]] and vals.tolist() == [[1.0, 1.0, 1.0]]


def test_ties_end_to_end(tmp_path, fake_models, make_toy_beir):
    # identical documents tie; trec_eval ranks ties by doc id descending, and so must the exact search
    root = make_toy_beir(tmp_path / "ties", corpus={d: "same words here" for d in ("a", "b", "c", "d")},
                          queries={"q": "same words"}, qrels={"q": {"b": 1}})
    rep = evaluate_model(fake_models["bow"](), [root], k=2, **QUIET)
    assert list(rep.datasets["ties"].run["q"]) == ["d", "c"]
    assert rep.datasets["ties"].result["mrr_at_10"] == 0.0  # b is third, beyond k=2


def test_identical_ids_are_skipped(tmp_path, fake_models, make_toy_beir):
    root = make_toy_beir(tmp_path / "dup", corpus={"q1": "apples pears", "d1": "apples and pears", "d2": "cars"},
                          queries={"q1": "apples pears"}, qrels={"q1": {"d1": 1}})
    rep = evaluate_model(fake_models["bow"](), [root], k=2, **QUIET)
    assert list(rep.datasets["dup"].run["q1"]) == ["d1", "d2"]
    assert rep.datasets["dup"].result["mrr_at_10"] == 1.0
    kept = evaluate_model(fake_models["bow"](), [root], k=2, ignore_identical_ids=False, **QUIET)
    assert list(kept.datasets["dup"].run["q1"])[0] == "q1"


def test_search_fn_hook(scifact_slice, fake_models):
    exact = evaluate_model(fake_models["bow"](), [scifact_slice], k=10, **QUIET)
    seen = []

    def search_fn(queries, k):
        seen.append((len(queries), k))
        return exact.datasets["scifact-slice"].run

    hooked = evaluate_model(fake_models["bow"](), [scifact_slice], k=10, index_type="hnsw", search_fn=search_fn,
                            **QUIET)
    assert seen == [(40, 10)]
    assert hooked.datasets["scifact-slice"].result.scores == exact.datasets["scifact-slice"].result.scores
    shallow = evaluate_model(fake_models["bow"](), [scifact_slice], k=5, search_fn=search_fn, **QUIET)
    assert all(len(docs) == 5 for docs in shallow.datasets["scifact-slice"].run.values())  # hook output cut to k
    factory_calls = []

    def factory(model, ds):
        factory_calls.append(ds.name)
        return search_fn

    evaluate_model(fake_models["bow"](), [scifact_slice], k=10, search_factory=factory, **QUIET)
    assert factory_calls == ["scifact-slice"]
    with pytest.raises(ValueError, match="search_fn"):
        evaluate_model(fake_models["bow"](), [scifact_slice], index_type="hnsw", **QUIET)


def test_bad_options_are_value_errors(toy_beir, fake_models):
    """An unknown option or a wrong type is bad input (a ValueError naming the option, so the CLI exits 2)."""
    bow = fake_models["bow"]()
    with pytest.raises(ValueError, match=r"colour: unknown setting; valid: .*k_values"):
        evaluate_model(bow, [toy_beir], colour="red", **QUIET)
    with pytest.raises(ValueError, match="k_value: .*did you mean k_values"):
        evaluate_model(bow, [toy_beir], k_value=[1, 10], **QUIET)
    with pytest.raises(ValueError, match="query_batch_size: expected an integer"):
        evaluate_model(bow, [toy_beir], query_batch_size="abc", **QUIET)
    with pytest.raises(ValueError, match="cache_chunk_size: expected an integer >= 1"):
        evaluate_model(bow, [toy_beir], cache_chunk_size=0, **QUIET)
    with pytest.raises(ValueError, match="k_values: expected a non-empty list of integers"):
        evaluate_model(bow, [toy_beir], k_values="10", **QUIET)
    with pytest.raises(ValueError, match="ignore_identical_ids: expected true or false"):
        evaluate_model(bow, [toy_beir], ignore_identical_ids="no", **QUIET)
    # lists (as JSON gives them) are accepted for the cut-offs
    rep = evaluate_model(bow, [toy_beir], k=10, k_values=[1, 5], mrr_k_values=[5], **QUIET)
    assert set(rep.datasets["toy"].result.scores) >= {"ndcg_at_1", "ndcg_at_5", "mrr_at_5"}
    assert "ndcg_at_10" not in rep.datasets["toy"].result.scores


def test_table_goes_to_stdout(toy_beir, fake_models, capsys):
    evaluate_model(fake_models["bow"](), [toy_beir], k=10, print_table=True, **QUIET)
    captured = capsys.readouterr()
    assert "nDCG@10" in captured.out and "toy" in captured.out
    assert "nDCG@10" not in captured.err


def test_bad_model_outputs(scifact_slice, fake_models):
    class Broken(fake_models["bow"]):
        def encode_documents(self, texts, show_progress=False):
            return np.zeros((len(texts) - 1, 4), np.float32)

    with pytest.raises(ValueError, match="encode_documents"):
        evaluate_model(Broken(), [scifact_slice], **QUIET)

    class Nan(fake_models["bow"]):
        def encode_queries(self, texts, show_progress=False):
            return np.full((len(texts), self.dim), np.nan, np.float32)

    with pytest.raises(ValueError, match="NaN"):
        evaluate_model(Nan(), [scifact_slice], **QUIET)


def test_deterministic_and_torch_threads_independent(scifact_slice, fake_models):
    a = evaluate_model(fake_models["bow"](), [scifact_slice], k=10, **QUIET).datasets["scifact-slice"].run
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = evaluate_model(fake_models["bow"](), [scifact_slice], k=10, **QUIET).datasets["scifact-slice"].run
    finally:
        torch.set_num_threads(threads)
    assert [list(d) for d in a.values()] == [list(d) for d in b.values()]


@pytest.mark.parametrize("name", ["codesearchnet-ruby", "cosqa"])
def test_code_retrieval_with_real_models(tmp_path, name, shared_data, minilm_path, tiny_modernbert, make_toy_beir):
    """The local code-retrieval sets (../shared/data) through `evaluate_model` with real models: the
    pretrained MiniLM bi-encoder ranks far above chance, a tiny ModernBERT ColBERT runs the same path."""
    from mbert_retrieval import BiEncoder, ColBERT
    from mbert_retrieval.data import read_beir_folder

    if not (shared_data / name / "corpus.jsonl").is_file():
        pytest.skip(f"dataset {name!r} not found at {shared_data / name}")
    full = read_beir_folder(shared_data / name, "test")
    qids = list(full.qrels)[:60]
    keep = {d for q in qids for d in full.qrels[q]} | set(list(full.corpus)[:140])
    folder = make_toy_beir(tmp_path / name, {d: full.corpus[d].text for d in full.corpus if d in keep},
                           {q: full.queries[q] for q in qids}, {q: full.qrels[q] for q in qids})
    dense = BiEncoder.from_pretrained(minilm_path, max_length=256, device="cpu")
    rep = evaluate_model(dense, [folder], k=100, output_dir=tmp_path / "out", **QUIET)
    scores = rep.datasets[name].result
    n_docs = len(keep)
    assert scores["ndcg_at_10"] > 0.25 and scores["recall_at_100"] > 0.8, scores.scores
    assert scores["ndcg_at_10"] > 5 * (10 / n_docs)  # chance: about 10 / n_docs
    colbert = ColBERT.from_pretrained(tiny_modernbert, dim=16, device="cpu")
    rep = evaluate_model(colbert, [folder], k=10, **QUIET)
    assert rep.datasets[name].result.num_queries == len(qids)


def test_evaluate_through_an_index(tmp_path, minilm_path, toy_beir, make_toy_beir):
    """`evaluate_model(index=...)`: an index folder (its model reloaded) or an open Retriever; an index of
    another corpus is refused."""
    from mbert_retrieval.data import read_beir_folder
    from mbert_retrieval.retriever import Retriever

    corpus = read_beir_folder(toy_beir, "test").corpus
    docs = [{"id": d, "text": doc.text, "title": doc.title or None} for d, doc in corpus.items()]
    with Retriever.build(tmp_path / "idx", docs, model=minilm_path) as r:
        exact = evaluate_model(r.model, [toy_beir], k=10, **QUIET).datasets["toy"].result["ndcg_at_10"]
        via_open = evaluate_model(None, [toy_beir], k=10, index=r, **QUIET)
    via_path = evaluate_model(None, [toy_beir], k=10, index=tmp_path / "idx", **QUIET)
    for rep in (via_open, via_path):
        assert rep.datasets["toy"].result["ndcg_at_10"] == pytest.approx(exact, abs=1e-6)
    other = make_toy_beir(tmp_path / "other", {"x1": "something else"}, {"q1": "else"}, {"q1": {"x1": 1}})
    with pytest.raises(ValueError, match="not the 1 of other"):
        evaluate_model(None, [other], k=10, index=tmp_path / "idx", **QUIET)
