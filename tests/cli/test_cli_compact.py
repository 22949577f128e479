"""`mbret compact INDEX [--json]`: a full merge that drops deleted documents, with no model and no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from mbert_retrieval.cli.main import app
from mbert_retrieval.index import Index

runner = CliRunner()
DIM = 8


def mbret(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _index(path, index_type: str = "hnsw", n: int = 60, finalize: bool = True):
    """An index of `n` documents with precomputed vectors, added in three calls (three commits), 10 deleted."""
    index = Index.create(path, "dense", index_type, model_id="fake/model", dim=DIM, chunk_size=16)
    vecs = _vectors(n, 0)
    docs = [{"id": f"d{i}", "text": f"document {i}"} for i in range(n)]
    for start in range(0, n, n // 3):
        index.add(docs[start: start + n // 3], vectors=list(vecs[start: start + n // 3]))
    if finalize:
        index.finalize()
        index.delete([f"d{i}" for i in range(0, n, n // 10)])
    index.close()
    return vecs


def test_compact_merges_and_drops_deleted_documents(tmp_path):
    vecs = _index(tmp_path / "idx")
    with Index.open(tmp_path / "idx") as index:
        want = [[(h.doc_id, h.score) for h in row] for row in index.search(vecs[:5], k=8)]
    r = mbret("compact", tmp_path / "idx", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    before, after = report["before"], report["after"]
    assert report["index"] == str(tmp_path / "idx")
    assert before["documents"] == after["documents"] == 50
    assert before["deleted"] == 10 and after["deleted"] == 0
    if before["segments"] is not None:  # an index with segments: one left after a full merge
        assert after["segments"] == 1 <= before["segments"]
    with Index.open(tmp_path / "idx") as index:
        assert len(index) == 50 and "d0" not in index and "d1" in index
        got = [[(h.doc_id, h.score) for h in row] for row in index.search(vecs[:5], k=8)]
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
    text = mbret("compact", tmp_path / "idx")
    assert text.exit_code == 0 and "before:" in text.stdout and "after:" in text.stdout
    assert "50 documents" in text.stdout and "(0 deleted" in text.stdout


def test_compact_loads_no_model_and_no_torch(tmp_path):
    _index(tmp_path / "idx", "flat")
    code = (
        "import json, sys\n"
        "from mbert_retrieval.cli.main import app\n"
        "try:\n"
        f"    app(['compact', {str(tmp_path / 'idx')!r}, '--json'], prog_name='mbret')\n"
        "except SystemExit as exc:\n"
        "    status = exc.code or 0\n"
        f"open({str(tmp_path / 'out.json')!r}, 'w').write(json.dumps({{'status': status, "
        "'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    found = json.loads((tmp_path / "out.json").read_text())
    assert found == {"status": 0, "torch": False, "transformers": False}


def test_compact_errors_exit_2(tmp_path):
    r = mbret("compact", tmp_path / "nowhere")
    assert r.exit_code == 2 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = mbret("compact", tmp_path / "empty")
    assert r.exit_code == 2 and "not an index folder" in r.stderr
    _index(tmp_path / "building", finalize=False)  # a build that did not finish: finish it first
    r = mbret("compact", tmp_path / "building")
    assert r.exit_code == 2 and "re-run" in r.stderr
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "sharded.json").write_text(json.dumps({"kind": "dense", "index_type": "flat",
                                                               "model_id": "m", "shards": [{"name": "a"}]}))
    r = mbret("compact", tmp_path / "old")
    assert r.exit_code == 2 and "mbret index CORPUS" in r.stderr and "--shards 1" in r.stderr


def test_compact_retrain_trains_the_quantizer_again(tmp_path):
    """`--retrain`: a new IVF-PQ quantizer file, every row re-encoded; PLAID without its float vectors is refused
    (exit 2, naming keep_full_vectors) and left as it was."""
    index = Index.create(tmp_path / "pq", "dense", "ivfpq", model_id="fake/model", dim=DIM, nlist=2, pq_m=2, pq_nbits=4, min_train_points=32)
    index.add([{"id": f"d{i}", "text": "t"} for i in range(80)], vectors=list(_vectors(80, 1)))
    index.finalize()
    before = {n for n in index.manifest.files if n.startswith("codec.")}
    index.close()
    result = mbret("compact", tmp_path / "pq", "--retrain", "--json")
    assert result.exit_code == 0, result.output
    with Index.open(tmp_path / "pq") as back:
        after = {n for n in back.manifest.files if n.startswith("codec.")}
        assert before and after and not before & after and len(back) == 80
        assert back.search(_vectors(80, 1)[5], k=1)[0][0].doc_id == "d5"

    plaid = Index.create(tmp_path / "plaid", "colbert", "plaid", model_id="fake/model", dim=DIM, n_centroids=4)
    rng = np.random.default_rng(0)
    plaid.add([{"id": f"d{i}", "text": "t"} for i in range(30)], vectors=[rng.standard_normal((4, DIM)).astype(np.float32) for _ in range(30)])
    plaid.finalize()
    plaid.close()
    result = runner.invoke(app, ["compact", str(tmp_path / "plaid"), "--retrain"])
    assert result.exit_code == 2 and "keep_full_vectors" in result.output
    assert len(Index.open(tmp_path / "plaid")) == 30
