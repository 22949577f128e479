"""The streaming-ingest memory benchmark (`python -m mbert_retrieval.eval.bench_ingest`): its --smoke run (the
output's structure, not its timings), the synthetic corpus and the marginal bytes per document."""

from __future__ import annotations

import json

from mbert_retrieval.data import load_corpus
from mbert_retrieval.eval import bench_ingest


def test_smoke_run_output(tmp_path, capsys):
    out = tmp_path / "ingest.json"
    assert bench_ingest.main(["--smoke", "--json", str(out), "--workdir", str(tmp_path / "work")]) == 0
    table = capsys.readouterr().out
    assert "| documents |" in table and "peak RSS MB" in table
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["n_docs"] for r in rows] == bench_ingest.SMOKE_SIZES == result["settings"]["sizes"]
    for row in rows:
        assert "error" not in row, row
        assert row["documents"] == row["n_docs"]  # every document reached the index
        assert 0 < row["rss_before"] <= row["peak_rss"]
        assert row["build_s"] > 0 and row["docs_per_s"] > 0 and row["corpus_bytes"] > 0
    assert rows[0]["bytes_per_doc"] is None and isinstance(rows[1]["bytes_per_doc"], float)
    assert not list((tmp_path / "work").glob("index_*"))  # removed without --keep
    assert result["markdown"] == table.strip()


def test_synthetic_corpus_is_deterministic(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert bench_ingest.write_corpus(a, 300, seed=3) == bench_ingest.write_corpus(b, 300, seed=3)
    assert a.read_bytes() == b.read_bytes()
    docs = load_corpus(a)
    assert len(docs) == 300 and all(8 <= len(d.text.split()) <= 16 for d in docs.values())
    bench_ingest.write_corpus(b, 300, seed=4)
    assert a.read_bytes() != b.read_bytes()


def test_marginal_bytes_per_document():
    rows = [{"n_docs": 10, "peak_rss": 1000}, {"n_docs": 20, "peak_rss": 1500}, {"n_docs": 40, "error": "x"},
            {"n_docs": 80, "peak_rss": 9000}]
    bench_ingest.add_marginal(rows)
    assert [r["bytes_per_doc"] for r in rows] == [None, 50.0, None, None]
    table = bench_ingest.to_markdown([{**rows[2], "corpus_bytes": 0}], dim=8)
    assert "error: x" in table


def test_corpus_words_come_from_the_tokenizer_vocabulary(tmp_path):
    vocab = {"[CLS]": 0, "##ing": 1, "apple": 2, "tree": 3, "an": 4, "Berlin": 5, "x1y": 6}
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    words = bench_ingest.tokenizer_words(tmp_path)
    assert words == ["apple", "tree"]
    assert bench_ingest.tokenizer_words(tmp_path / "missing") is None
    bench_ingest.write_corpus(tmp_path / "c.jsonl", 20, words=words)
    assert {w for d in load_corpus(tmp_path / "c.jsonl").values() for w in f"{d.title} {d.text}".split()} <= set(words)
