"""The index cost-curve benchmark (`python -m mbert_retrieval.eval.bench_scale`): its --smoke run (output structure,
not timings), the folder diff that measures bytes written, and the deterministic synthetic data."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from mbert_retrieval.eval import bench_scale
from mbert_retrieval.eval.bench_scale import BLOCK, SMOKE, Synthetic, diff_folders, snapshot

ROW_KEYS = {
    "kind",
    "n_docs",
    "dim",
    "build_s",
    "open_s",
    "index_bytes",
    "qps",
    "self_at_k",
    "add_s",
    "add_docs",
    "add_written_bytes",
    "add_rewrite_fraction",
    "add_io_wchar",
    "add_io_write_bytes",
    "add_found",
    "rss_start",
    "peak_rss_build",
    "peak_rss_search",
    "peak_rss_add",
    "cpu_s",
    "wall_s",
}
STREAM_KEYS = {
    "kind",
    "n_docs",
    "dim",
    "add_s",
    "docs_per_s",
    "rss_start",
    "peak_rss_add",
    "peak_rss_finalize",
    "finalize_s",
    "vector_bytes",
    "index_bytes",
    "added",
}


def test_smoke_run_output(tmp_path, capsys):
    out, work = tmp_path / "scale.json", tmp_path / "work"
    result = bench_scale.main(["--smoke", "--workdir", str(work), "--json", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["command"].endswith(f"--smoke --workdir {work} --json {out}")
    rows = {r["kind"]: r for r in result["rows"]}
    assert set(rows) == set(bench_scale.KINDS)
    for kind, r in rows.items():
        assert r.get("error") is None, r
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["n_docs"] == (SMOKE["plaid_sizes"] if kind == "colbert-plaid" else SMOKE["sizes"])[0]
        assert r["add_docs"] == 20 and r["add_found"] == 20  # the added documents are searchable
        assert r["self_at_k"] == pytest.approx(1.0)  # queries are perturbed indexed documents: all found
        assert 0 < r["add_written_bytes"] and 0 < r["add_rewrite_fraction"]
        assert r["add_written_bytes"] == r["add_new_bytes"] + r["add_replaced_bytes"] + r["add_in_place_bytes"]
        assert r["index_bytes_after_add"] > 0 and r["index_bytes"] > 0
        assert r["rss_start"] <= r["peak_rss_build"] <= r["peak_rss_search"] <= r["peak_rss_add"]
        if sys.platform.startswith("linux"):
            assert r["add_io_wchar"] > 0
    assert rows["dense-ivfpq"]["effective_index_type"] == "ivfpq"  # the smoke settings really train IVF-PQ
    stream = result["stream"]
    assert [s["n_docs"] for s in stream] == SMOKE["stream_sizes"]
    for s in stream:
        assert s.get("error") is None, s
        assert STREAM_KEYS <= set(s), STREAM_KEYS - set(s)
        assert s["added"] == s["n_docs"] and s["vector_bytes"] == s["n_docs"] * SMOKE["stream_dim"] * 4
        assert s["peak_rss_add"] <= s["peak_rss_finalize"]
    assert not [p for p in work.iterdir() if p.is_dir()]  # index folders are removed after each run

    printed = capsys.readouterr().out
    assert "rewrite %" in printed and "peak MB finalize" in printed
    md = bench_scale.to_markdown(json.loads(out.read_text()))
    for kind in bench_scale.KINDS:
        assert sum(line.startswith(f"| {kind}") for line in md.splitlines()) == 1 + (kind == "dense-flat") * len(stream)
    assert bench_scale.main(["--markdown-from", str(out)]) == json.loads(out.read_text())
    assert capsys.readouterr().out.strip() == md.strip()


def test_failed_worker_is_reported_and_the_run_goes_on(tmp_path):
    result = bench_scale.main(
        [
            "--smoke",
            "--kinds",
            "dense-flat",
            "dense-hnsw",
            "--stream-sizes",
            "--stream-kinds",
            "dense-flat",
            "--param",
            "dense-flat.no_such_setting=1",
            "--workdir",
            str(tmp_path),
        ]
    )
    flat, hnsw = result["rows"]
    assert "no_such_setting" in flat["error"] and hnsw.get("error") is None
    assert result["stream"] == []
    assert "failed: dense-flat" in bench_scale.to_markdown(result)


def test_diff_folders_classifies_writes(tmp_path):
    (tmp_path / "sub").mkdir()
    for name, size in {"same": 10, "replaced": 20, "in_place": 30, "removed": 40, "sub/same": 5}.items():
        (tmp_path / name).write_bytes(b"x" * size)
    before = snapshot(tmp_path)
    (tmp_path / "tmp").write_bytes(b"y" * 25)
    os.replace(tmp_path / "tmp", tmp_path / "replaced")  # atomic rewrite: new inode
    with open(tmp_path / "in_place", "ab") as fh:  # SQLite-like: same inode, grows
        fh.write(b"z" * 7)
    (tmp_path / "removed").unlink()
    (tmp_path / "sub" / "new").write_bytes(b"n" * 3)

    d = diff_folders(before, snapshot(tmp_path))
    assert (d.new_bytes, d.replaced_bytes, d.in_place_bytes, d.removed_bytes) == (3, 25, 37, 40)
    assert d.written_bytes == 65
    assert d.files == ["*in_place", "~replaced", "+sub/new", "-removed"]
    assert diff_folders(before, before).files == []


def test_synthetic_data_is_the_same_however_it_is_read():
    data = Synthetic(dim=8, colbert_dim=4, tokens=(3, 5), seed=7)
    start, n = BLOCK - 3, 10  # across a block boundary
    whole = list(data.rows("dense", 0, start + n))[start:]
    part = list(data.rows("dense", start, n))
    np.testing.assert_array_equal(np.stack(whole), np.stack(part))
    np.testing.assert_allclose(np.linalg.norm(np.stack(part), axis=1), 1.0, rtol=1e-5)
    mats = list(data.rows("colbert", start, n))
    assert [m.shape for m in mats] == [m.shape for m in list(data.rows("colbert", 0, start + n))[start:]]
    assert all(3 <= len(m) <= 5 and m.shape[1] == 4 for m in mats)
    docs = list(data.docs(start, n))
    assert [d["id"] for d in docs] == [f"d{i}" for i in range(start, start + n)]
    assert docs == list(Synthetic(dim=8, seed=7).docs(start, n)) != list(Synthetic(dim=8, seed=8).docs(start, n))
    assert all(6 <= len(d["text"].split()) <= 14 for d in docs)
    ids, q = data.queries("dense", 50, 5)
    assert len(ids) == len(set(ids)) == 5 and q.shape == (5, 8)
