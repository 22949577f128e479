"""Readers beside a writer: one process writes continuously (add / update / delete, precomputed random
vectors, no model), others open + search the index continuously, and a long-lived reader (as `mbret serve`)
searches continuously. Expected: no open reports a healthy index as corrupt, no write fails because a
reader is open, every search answers a valid result, and the long-lived reader catches up with the writes.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

DIM = 16
N_BASE = 300
KINDS = {
    "flat": ("dense", "flat", {}),
    "hnsw": ("dense", "hnsw", {"hnsw_m": 8, "ef_construction": 32}),
    "ivfpq": ("dense", "ivfpq", {"nlist": 8, "pq_nbits": 4, "min_train_points": 200}),
    "plaid": ("colbert", "plaid", {"n_centroids": 16}),
    # small merge settings: nearly every write merges segments while the readers load and search
    "plaid-merging": ("colbert", "plaid", {"n_centroids": 16, "segments_per_tier": 2, "merge_floor_rows": 4}),
    "hnsw-merging": ("dense", "hnsw", {"hnsw_m": 8, "ef_construction": 32, "segments_per_tier": 2, "merge_floor_rows": 4}),
}


def _vectors(kind: str, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    if kind == "dense":
        return list(unit(rng.standard_normal((n, DIM))))
    return [unit(rng.standard_normal((int(rng.integers(3, 9)), DIM))) for _ in range(n)]


def _doc(doc_id: str, rng: np.random.Generator, rev: int = 0) -> dict[str, Any]:
    return {"id": doc_id, "text": f"text {doc_id} {int(rng.integers(1 << 30))}", "metadata": {"rev": rev}}


def _build(path: Path, name: str) -> None:
    from mbert_retrieval.index.base import Index

    kind, index_type, params = KINDS[name]
    rng = np.random.default_rng(0)
    index = Index.create(path, kind, index_type, model_id="fake/random", dim=DIM, **params)
    index.add([_doc(f"b{i}", rng) for i in range(N_BASE)], vectors=_vectors(kind, N_BASE, rng))
    index.finalize()
    index.close()


def _problem(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc)[-3:])}"


def _check_hits(hits: list, k: int) -> str | None:
    """Why a search answer is not valid (None when it is)."""
    ids = [h.doc_id for h in hits]
    scores = [h.score for h in hits]
    if not ids or len(ids) > k or len(set(ids)) != len(ids):
        return f"bad hit list {ids}"
    if not all(np.isfinite(scores)) or scores != sorted(scores, reverse=True):
        return f"bad scores {scores}"
    if not all(isinstance(i, str) and i[:1] in "bw" for i in ids):
        return f"unknown ids {ids}"
    return None


def _query(kind: str, rng: np.random.Generator) -> Any:
    return _vectors(kind, 1, rng)[0] if kind == "dense" else [_vectors(kind, 1, rng)[0]]


def _worker(role: str, path: str, name: str, seconds: float, seed: int, barrier: Any, out: Any) -> None:
    """One process of the test: `writer`, `opener` (open + search + close in a loop) or `reader` (one
    long-lived index, searched in a loop). Puts {role, ops, errors, ...} on `out`."""
    import faiss
    import torch

    from mbert_retrieval.index.base import Index

    faiss.omp_set_num_threads(1)  # as the package fixture does in the test process: no OpenMP spinning
    torch.set_num_threads(1)
    kind = KINDS[name][0]
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"role": role, "ops": 0, "errors": []}
    try:
        reader = Index.open(path)
        reader.search(_query(kind, rng), k=5)  # warm up (lazy imports) before the clock starts
        if role != "reader":
            reader.close()
            reader = None
        sizes = set()
        barrier.wait(timeout=120)
        deadline = time.monotonic() + seconds
        next_id, mine = 0, []  # writer: its documents (the base documents are never deleted)
        while time.monotonic() < deadline:
            try:
                if role == "writer":
                    with Index.open(path, verify=False) as index:
                        op = rng.choice(["add", "update", "delete"], p=[0.45, 0.35, 0.2])
                        if op == "add" or len(mine) < 4:
                            docs = [_doc(f"w{next_id + i}", rng) for i in range(int(rng.integers(2, 6)))]
                            next_id += len(docs)
                            index.add(docs, vectors=_vectors(kind, len(docs), rng))
                            mine += [d["id"] for d in docs]
                        elif op == "update":
                            picked = [str(x) for x in rng.choice(mine, size=4, replace=False)]
                            current = {d["id"]: d for d in index.get(picked)}
                            docs = [{**current[i], "metadata": {"rev": result["ops"]}} for i in picked[:2]]  # metadata only
                            docs += [_doc(i, rng, rev=result["ops"]) for i in picked[2:]]  # new text
                            index.update(docs, vectors=_vectors(kind, len(docs), rng))
                        else:
                            gone = [str(x) for x in rng.choice(mine, size=2, replace=False)]
                            index.delete(gone)
                            mine = [i for i in mine if i not in gone]
                elif role == "opener":
                    with Index.open(path, verify=result["ops"] % 3 == 0) as index:
                        if (why := _check_hits(index.search(_query(kind, rng), k=5)[0], 5)) is not None:
                            result["errors"].append(why)
                else:
                    assert reader is not None
                    if (why := _check_hits(reader.search(_query(kind, rng), k=5)[0], 5)) is not None:
                        result["errors"].append(why)
                    sizes.add(len(reader.structure))
                result["ops"] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is a finding of the test
                result["errors"].append(_problem(exc))
        result["sizes"] = len(sizes)
        if reader is not None:
            reader.close()
    except BaseException as exc:  # noqa: BLE001
        result["errors"].append("worker died: " + _problem(exc))
    out.put(result)


def _run(tmp_path: Path, name: str, seconds: float, openers: int = 2) -> None:
    path = tmp_path / name
    _build(path, name)
    ctx = mp.get_context("spawn")
    roles = ["writer", "reader"] + ["opener"] * openers
    barrier, out = ctx.Barrier(len(roles)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(path), name, seconds, i, barrier, out)) for i, r in enumerate(roles)]
    for p in procs:
        p.start()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds + 240
    try:
        while len(results) < len(procs):
            try:
                results.append(out.get(timeout=1))
            except queue.Empty:
                died = [f"{r} (exit code {p.exitcode})" for r, p in zip(roles, procs) if p.exitcode not in (None, 0)]
                if died or time.monotonic() > deadline:
                    pytest.fail(f"{name}: workers died without reporting: {died or 'timeout'} (reported: {results})")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    by_role = {r["role"]: r for r in results}
    print(name, {r["role"]: r["ops"] for r in results})  # operations done (shown with `pytest -s`)
    problems = [f"{r['role']}: {e}" for r in results for e in r["errors"]]
    assert not problems, f"{name}: {len(problems)} failures, first ones:\n" + "\n".join(problems[:5])
    assert all(r["ops"] > 0 for r in results), results
    assert by_role["writer"]["ops"] >= 2 and by_role["reader"]["sizes"] >= 2, f"{name}: the long-lived reader never caught up: {results}"


def test_readers_beside_a_writer_quick(tmp_path):
    _run(tmp_path, "flat", seconds=4)


def test_readers_beside_a_writer_merging_segments_quick(tmp_path):
    """Merges replace segment files while readers open and search: no false corruption, no failed write."""
    _run(tmp_path, "plaid-merging", seconds=5)




@pytest.mark.slow
@pytest.mark.parametrize("name", KINDS)
def test_readers_beside_a_writer(tmp_path, name):
    _run(tmp_path, name, seconds=20)


# ----------------------------------------------------------------- deterministic pieces of the above
def _small(tmp_path: Path, index_type: str = "flat"):
    from mbert_retrieval.index.base import Index

    rng = np.random.default_rng(1)
    index = Index.create(tmp_path / "ix", "dense", index_type, model_id="fake/random", dim=DIM, **KINDS[index_type][2])
    index.add([_doc(f"b{i}", rng) for i in range(20)], vectors=_vectors("dense", 20, rng))
    index.finalize()
    return index, rng


def test_catching_up_never_takes_the_writer_lock(tmp_path):
    """A long-lived reader catches up while a writer holds the lock (before: it waited for a free lock,
    and while it held the lock to catch up, the other process's writes failed)."""
    from mbert_retrieval.index.base import Index
    from mbert_retrieval.index.storage import writer_lock

    writer, rng = _small(tmp_path)
    reader = Index.open(tmp_path / "ix")
    vec = _vectors("dense", 1, rng)
    writer.add([{"id": "new", "text": "new"}], vectors=vec)
    with writer_lock(tmp_path / "ix"):  # another write is under way
        hits = reader.search(vec[0], k=1)[0]
    assert hits[0].doc_id == "new" and len(reader) == 21 == len(reader.structure)
    reader.close()
    writer.close()


def test_writer_keeps_files_a_loading_reader_may_need(tmp_path):
    """While a reader holds a read lease, a merge keeps the segment files it replaced; the first write after
    the lease is gone removes them. Adds keep every segment file (they only write new ones)."""
    from mbert_retrieval.index.storage import read_lease

    writer, rng = _small(tmp_path, "hnsw")
    root = tmp_path / "ix"
    writer.add([{"id": "x0", "text": "x"}], vectors=_vectors("dense", 1, rng))
    old = set(writer.manifest.files)
    assert len(old) == 2 and old <= {p.name for p in root.iterdir()}
    with read_lease(root):
        writer.compact()  # one segment replaces both
        assert old <= {p.name for p in root.iterdir()} and not old & set(writer.manifest.files)
    writer.add([{"id": "x2", "text": "x"}], vectors=_vectors("dense", 1, rng))
    assert not old & {p.name for p in root.iterdir()} and set(writer.manifest.files) <= {p.name for p in root.iterdir()}
    writer.close()


def test_stale_lease_of_a_dead_reader_is_ignored(tmp_path):
    import socket
    import subprocess
    import sys

    from mbert_retrieval.index.storage import LEASE_DIR, readers_active

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LEASE_DIR).mkdir()
    lease = tmp_path / LEASE_DIR / f"{socket.gethostname()}-{dead.pid}-abcd1234.lease"
    lease.write_text("0\n")
    assert not readers_active(tmp_path) and not lease.exists()
    live = tmp_path / LEASE_DIR / f"{socket.gethostname()}-{__import__('os').getpid()}-abcd1234.lease"
    live.write_text("0\n")
    assert readers_active(tmp_path) and live.exists()


def test_reader_that_loses_a_race_retries_from_a_fresh_manifest(tmp_path, monkeypatch):
    """A reader read the manifest, then a writer merged segments (and removed the files it replaced: the
    reader took no lease, as in a folder it may not write to) before the reader read the rest: not
    corruption, the reader loads the newer state."""
    from mbert_retrieval.index import sync
    from mbert_retrieval.index.base import Index
    from mbert_retrieval.index.manifest import IndexManifest

    writer, rng = _small(tmp_path, "hnsw")
    writer.add([{"id": "x0", "text": "x"}], vectors=_vectors("dense", 1, rng))
    stale = IndexManifest.load(tmp_path / "ix")
    writer.compact()
    assert not any((tmp_path / "ix" / name).exists() for name in stale.files)
    real, calls = IndexManifest.load, []

    def load(directory):
        calls.append(directory)
        return IndexManifest.from_dict(stale.to_dict()) if len(calls) == 1 else real(directory)

    monkeypatch.setattr(sync.IndexManifest, "load", staticmethod(load))
    reader = Index.open(tmp_path / "ix")
    assert len(calls) > 1 and reader.manifest.generation == writer.manifest.generation and len(reader.structure) == 21
    reader.close()
    writer.close()
