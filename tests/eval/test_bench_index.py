"""Smoke test of the index benchmark (`python -m mbert_retrieval.eval.bench_index`): our index kinds on a tiny
synthetic BEIR folder with tiny random models; PyLate is skipped (its extensions take minutes to compile)."""

from __future__ import annotations

import json
import random

import pytest

from mbert_retrieval.eval import bench_index


@pytest.fixture
def toy_folder(tmp_path, make_toy_beir):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(60)]
    corpus = {f"d{i}": " ".join(rng.choice(words) for _ in range(rng.randint(6, 24))) for i in range(50)}
    queries = {f"q{i}": " ".join(rng.choice(words) for _ in range(4)) for i in range(8)}
    qrels = {q: {f"d{(7 * i) % 50}": 1, f"d{(7 * i + 40) % 50}": 2} for i, q in enumerate(queries)}
    return make_toy_beir(tmp_path / "toy", corpus, queries, qrels)


def test_bench_index_our_kinds(tmp_path, toy_folder, tiny_modernbert, capsys):
    out = tmp_path / "bench.json"
    argv = ["--datasets", str(toy_folder), "--max-docs", "30", "--max-queries", "6", "--kinds", "ours", "--no-pylate",
            "--dense-model", tiny_modernbert, "--colbert-model", tiny_modernbert, "--document-length", "32",
            "--workdir", str(tmp_path / "work"), "--json", str(out), "--param", "dense-hnsw.ef_search=64"]
    result = bench_index.main(argv)

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["command"].endswith(" ".join(argv))
    (ds,) = result["datasets"]
    assert ds["n_queries"] == 6
    assert ds["n_docs"] == 30  # the 12 judged documents of the kept queries + the first others up to 30
    rows = {r["kind"]: r for r in ds["rows"]}
    assert set(rows) == set(bench_index.GROUPS["ours"])
    for r in rows.values():
        assert r["error"] is None, r
        assert r["build_s"] > 0 and r["qps"] > 0 and r["units"] > 0
        assert 0 < r["struct_bytes"] <= r["index_bytes"] < r["total_bytes"]
        assert r["index_bytes_per_unit"] > 0
        assert 0.0 <= r["ndcg_at_10"] <= 1.0 and 0.0 <= r["overlap_at_10"] <= 1.0
    for exact in ("dense-flat", "colbert-flat"):  # exact search agrees with the independent exact reference
        assert rows[exact]["ndcg_rel_exact"] == pytest.approx(1.0)
        assert rows[exact]["overlap_at_10"] == pytest.approx(1.0)
    assert rows["dense-flat"]["build_x"] == pytest.approx(1.0)  # the dense reference row
    assert "ef_search=64" in rows["dense-hnsw"]["params"]
    assert rows["colbert-plaid2"]["index_bytes_per_unit"] < rows["colbert-flat"]["index_bytes_per_unit"]
    assert ds["encode"]["colbert"]["units"] == rows["colbert-flat"]["units"]
    assert "colbert-plaid4" in capsys.readouterr().out  # the tables are printed

    # a second run reads the embeddings from the cache: encoding time is reported as cached (None)
    again = bench_index.main([a if a != "ours" else "dense-flat" for a in argv])
    assert again["datasets"][0]["encode"]["dense"]["docs_per_s"] is None
    assert again["datasets"][0]["rows"][0]["ndcg_at_10"] == pytest.approx(rows["dense-flat"]["ndcg_at_10"])

    # the Markdown tables (README) render from the saved JSON, one row per kind
    md = bench_index.to_markdown(json.loads(json.dumps(result)))
    assert md.startswith(f"`{result['command']}`")
    for kind, r in rows.items():
        line = next(x for x in md.splitlines() if x.startswith(f"| {kind} "))
        assert f"{r['ndcg_at_10']:.4f}" in line
