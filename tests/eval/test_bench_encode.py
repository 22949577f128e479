"""Smoke test of the encoding benchmark (`python -m mbert_retrieval.eval.bench_encode`) on CPU with a tiny
model: both systems run on the same texts and give the same vectors; the FLOP count behind MFU is sane."""

from __future__ import annotations

import json

from mbert_retrieval.eval import bench_encode


def test_bench_encode_tiny(tiny_modernbert, capsys, tmp_path, make_toy_beir):
    folder = make_toy_beir(tmp_path / "toy", {f"d{i}": "retrieval " * (3 + 7 * i) for i in range(30)},
                           {"q": "x"}, {"q": {"d0": 1}})
    bench_encode.main(["--model", tiny_modernbert, "--n", "30", "--packed", "--repeats", "1", "--device", "cpu",
                       "--dataset", str(folder), "--max-length", "128", "--dtype", "float32", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["n_texts"] == 30 and result["n_tokens"] > 30 * 3
    assert [r["system"] for r in result["rows"]] == ["sentence-transformers", "ours (padded)", "ours (packed)"]
    assert result["max_abs_diff_vs_st"] < 1e-4  # the same embeddings, or the speed comparison means nothing
    for r in result["rows"]:
        assert r["seconds"] > 0 and r["tokens_per_s"] > 0 and r["mfu"] is None  # MFU only on CUDA
        assert r["min_cosine_vs_st"] > 0.9999


def test_bench_encode_defaults_and_ndcg(tiny_modernbert, capsys, tmp_path, make_toy_beir):
    """Default settings (one "ours" row, our automatic dtype) and the nDCG@10 check on the same dataset."""
    corpus = {f"d{i}": f"topic{i % 4} " * (2 + i) for i in range(12)}
    folder = make_toy_beir(tmp_path / "toy", corpus, {"q0": "topic0", "q1": "topic1"},
                           {"q0": {"d0": 1, "d4": 1}, "q1": {"d1": 1}})
    bench_encode.main(["--model", tiny_modernbert, "--n", "12", "--repeats", "1", "--device", "cpu",
                       "--dataset", str(folder), "--ndcg", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert [r["system"] for r in result["rows"]] == ["sentence-transformers", "ours"]
    assert result["dtype"] == "auto" and result["target"] == {"ratio": 1.5, "min_cosine": 0.9999}
    ndcg = result["ndcg"]
    assert ndcg["n_queries"] == 2 and ndcg["n_docs"] == 12
    assert 0 <= ndcg["ours"] <= 1 and abs(ndcg["difference"] - (ndcg["ours"] - ndcg["sentence-transformers"])) < 1e-12


def test_min_cosine():
    import numpy as np

    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert bench_encode.min_cosine(a, a * 3) > 0.999999
    assert abs(bench_encode.min_cosine(a, np.array([[1.0, 0.0], [1.0, 0.0]]))) < 1e-9


def test_flops_per_token_counts_parameters_and_attention(tiny_modernbert):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_modernbert)
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    short, long = bench_encode.flops_per_token(model, 8), bench_encode.flops_per_token(model, 512)
    assert short > 2 * params and long > short  # attention grows with the context, global layers beyond the window
