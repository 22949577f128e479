"""Segments: a write adds a segment file and leaves the others untouched, merges keep results and purge
tombstones, a crash at any write point of an add that merges (or of a compact) loses nothing, folders of
the format before segments open, and the merge policy bounds the segment count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mbert_retrieval.index.base import Index
from mbert_retrieval.index.merge_policy import TieredMergePolicy
from mbert_retrieval.index.segments import SegmentSet

from .test_update_atomic import CrashPoints, Kill

DIM = 16
KINDS = {
    "hnsw": ("dense", "hnsw", {"hnsw_m": 8, "ef_construction": 64}),
    "ivfpq": ("dense", "ivfpq", {"nlist": 4, "pq_nbits": 4, "min_train_points": 100}),
    "int8": ("dense", "flat", {}),
    "plaid": ("colbert", "plaid", {"n_centroids": 16}),
}
MERGE = {"segments_per_tier": 3, "merge_floor_rows": 8}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _vectors(kind: str, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    if kind == "dense":
        return list(_unit(rng.standard_normal((n, DIM))))
    return [_unit(rng.standard_normal((int(rng.integers(3, 8)), DIM))) for _ in range(n)]


def _docs(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"text {prefix}{i}"} for i in range(n)]


def _build(path: Path, name: str, n: int = 200, seed: int = 0, **extra) -> tuple[Index, np.random.Generator, list]:
    kind, index_type, params = KINDS[name]
    quantization = "int8" if name == "int8" else None
    rng = np.random.default_rng(seed)
    index = Index.create(path, kind, index_type, model_id="fake/random", dim=DIM, quantization=quantization, **params, **extra)
    vectors = _vectors(kind, n, rng)
    index.add(_docs("b", n), vectors=vectors)
    index.finalize()
    return index, rng, vectors


def _check(index: Index) -> None:
    ids = index.structure.ids().tolist()
    assert len(ids) == len(set(ids)) and set(ids) == set(index.docstore.live_row_ids().tolist())


@pytest.mark.parametrize("name", KINDS)
def test_add_writes_a_new_segment_and_leaves_the_others(tmp_path, name):
    index, rng, _ = _build(tmp_path / "ix", name)
    assert isinstance(index.structure, SegmentSet)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "ix").iterdir() if p.is_file()}
    kind = KINDS[name][0]
    index.add(_docs("n", 3), vectors=_vectors(kind, 3, rng))
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "ix").iterdir() if p.is_file()}
    structure_files = [n for n in before if n.startswith(("seg.", "codec."))]
    assert structure_files and all(after[n] == before[n] for n in structure_files)  # not rewritten
    new = [n for n in after if n.startswith("seg.") and n not in before]
    assert len(new) == 1 and new[0] in index.manifest.files
    assert index.info()["structure"]["segments"] == 2
    back = Index.open(tmp_path / "ix")
    _check(back)
    assert len(back) == 203 and back.info()["structure"]["segments"] == 2


@pytest.mark.parametrize("name", ["hnsw", "plaid"])
def test_merges_keep_results_and_purge_tombstones(tmp_path, name):
    """Many small adds (merged by the policy) and deletes, then compact: the same ranking as the same rows
    fanned out over segments, no deleted row anywhere, the segment count stays bounded."""
    kind = KINDS[name][0]
    index, rng, base = _build(tmp_path / "ix", name, n=60, **MERGE)
    added: dict[str, np.ndarray] = {}
    for j in range(25):
        docs = _docs(f"a{j}_", 3)
        vecs = _vectors(kind, 3, rng)
        index.add(docs, vectors=vecs)
        added.update({d["id"]: v for d, v in zip(docs, vecs)})
        if j % 4 == 0:
            index.delete([f"a{j}_0", f"b{j}"])
        assert index.info()["structure"]["segments"] <= (MERGE["segments_per_tier"] - 1) * 4  # 4 tiers up to 216 rows
    gone = {f"a{j}_0" for j in range(0, 25, 4)} | {f"b{j}" for j in range(0, 25, 4)}
    queries = [added[k] for k in list(added)[1:40:3]]
    params = {"ef_search": 400} if kind == "dense" else {"ncandidates": 10_000, "ndocs": 10_000, "nprobe": 16}
    k = 8
    q = np.stack(queries) if kind == "dense" else queries
    fanned = index.search(q, k=k, **params)
    assert not gone & {h.doc_id for row in fanned for h in row}
    index.compact()
    info = index.info()["structure"]
    assert info["segments"] == 1 and (info["tombstones"] == 0 if kind == "dense" else info["live_documents"] == len(index))
    merged = index.search(q, k=k, **params)
    for a, b in zip(fanned, merged):
        assert [h.doc_id for h in a] == [h.doc_id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    back = Index.open(tmp_path / "ix")
    _check(back)
    assert len(back) == 60 + 75 - len(gone)
    for a, b in zip(merged, back.search(q, k=k, **params)):
        assert [h.doc_id for h in a] == [h.doc_id for h in b]


def test_fanned_out_search_equals_one_segment_with_exact_scores(tmp_path):
    """HNSW segments searched wide enough are exact: the fan-out over segments returns the brute-force top-k."""
    index, rng, base = _build(tmp_path / "ix", "hnsw", n=40, **MERGE)
    vectors = {f"b{i}": v for i, v in enumerate(base)}
    for j in range(6):
        vecs = _vectors("dense", 5, rng)
        index.add(_docs(f"a{j}_", 5), vectors=vecs)
        vectors.update({f"a{j}_{i}": v for i, v in enumerate(vecs)})
    assert index.info()["structure"]["segments"] > 1
    ids = list(vectors)
    matrix = np.stack([vectors[i] for i in ids])
    q = _unit(rng.standard_normal((5, DIM)))
    exact = q @ matrix.T
    for row, hits in zip(exact, index.search(q, k=10, ef_search=500)):
        order = np.argsort(-row)[:10]
        assert [h.doc_id for h in hits] == [ids[i] for i in order]
        np.testing.assert_allclose([h.score for h in hits], row[order], atol=1e-5)


@pytest.mark.parametrize("name", ["hnsw", "plaid"])
@pytest.mark.parametrize("operation", ["add", "compact"])
def test_crash_at_every_write_point_of_a_merge(tmp_path, monkeypatch, name, operation):
    """kill -9 (simulated) at every write point of an add that triggers a merge, or of a compact: the folder
    opens with the old or the new state, nothing lost or duplicated, and a rerun finishes the work."""
    kind = KINDS[name][0]
    base_dir = tmp_path / "base"
    index, rng, _ = _build(base_dir, name, n=40, **MERGE)
    for j in range(2):  # two small segments: the next add makes three in tier 0 -> merged
        index.add(_docs(f"s{j}_", 2), vectors=_vectors(kind, 2, rng))
    index.delete(["b1", "s0_0"])
    index.close()
    docs, vecs = _docs("new", 2), _vectors(kind, 2, rng)
    expected = ({f"b{i}" for i in range(40)} | {"s0_1", "s1_0", "s1_1"}) - {"b1"}
    crash = CrashPoints(monkeypatch)
    at, outcomes = 0, set()
    while True:
        at += 1
        folder = tmp_path / f"run{at}"
        shutil.copytree(base_dir, folder)
        crash.arm(at)
        target = Index.open(folder)
        try:
            target.add(docs, vectors=vecs) if operation == "add" else target.compact()
        except Kill:
            killed = True
        else:
            killed = False
        target.close()
        crash.arm(0)
        back = Index.open(folder)
        _check(back)
        live = {d for d in expected | {"new0", "new1"} if d in back}
        assert live in (expected, expected | {"new0", "new1"}), f"write point {at}: {sorted(live ^ expected)}"
        outcomes.add(len(live))
        back.add(docs, vectors=vecs) if operation == "add" else back.compact()
        _check(back)
        assert len(back) == len(expected) + (2 if operation == "add" else 0)
        assert back.info()["structure"]["segments"] == (2 if operation == "add" else 1)  # the add merged the small ones
        assert {n for n in back.manifest.files} <= {p.name for p in folder.iterdir()}
        back.add([], vectors=[])  # a writer removes the orphans of the killed write
        orphans = {p.name for p in folder.iterdir() if p.name.startswith(("seg.", "codec."))} - set(back.manifest.files)
        assert not orphans, f"write point {at}: files left behind {orphans}"
        back.close()
        shutil.rmtree(folder)
        if not killed:
            break
    assert at > 4


def test_folder_written_before_segments_opens_as_one_segment(tmp_path):
    """Format of the previous release: one whole structure file per generation (`plaid.GGGGGG.safetensors`,
    codec included), no segment list. It opens and searches as it is; the next write keeps it as a segment."""
    from mbert_retrieval.index.manifest import IndexManifest

    index, rng, base = _build(tmp_path / "ix", "plaid", n=50)
    want = index.search(base[:5], k=5)
    whole = index.structure.segments[0].structure
    whole.codec = index.structure.template.codec
    generation = index.manifest.generation
    record = whole.save(tmp_path / "ix", generation)  # the old whole-structure writer
    manifest = IndexManifest.load(tmp_path / "ix")
    manifest.files = {n: r.__dict__ for n, r in record.items()}
    manifest.params["state"] = {"trained": True, "n_centroids": 16}
    index.close()
    manifest.save(tmp_path / "ix")
    for p in (tmp_path / "ix").glob("seg.*"):
        p.unlink()
    for p in (tmp_path / "ix").glob("codec.*"):
        p.unlink()
    back = Index.open(tmp_path / "ix")
    got = back.search(base[:5], k=5)
    assert [[h.doc_id for h in r] for r in got] == [[h.doc_id for h in r] for r in want]
    back.add(_docs("n", 2), vectors=_vectors("colbert", 2, rng))
    files = set(back.manifest.files)
    assert f"plaid.{generation:06d}.safetensors" in files and any(n.startswith("codec.") for n in files)
    back.close()
    again = Index.open(tmp_path / "ix")
    assert len(again) == 52 and again.info()["structure"]["segments"] == 2
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["params"]["state"]["segments"][0]["id"] == 0


def test_merge_policy_bounds_segments_and_rewrites():
    policy = TieredMergePolicy(segments_per_tier=4, floor_rows=10)
    segments: list[tuple[int, int, int]] = []
    written = 0
    next_id = 0
    for _ in range(500):  # 500 commits of 5 rows
        segments.append((next_id, 5, 5))
        next_id += 1
        written += 5
        for group in policy.find_merges(segments):
            rows = sum(s[2] for s in segments if s[0] in group)
            segments = [s for s in segments if s[0] not in group] + [(next_id, rows, rows)]
            next_id += 1
            written += rows
        assert len(segments) <= 3 * (1 + 4)
    assert sum(s[2] for s in segments) == 2500
    assert written < 2500 * 7  # each row rewritten a logarithmic number of times
    assert policy.find_merges([(1, 100, 10), (2, 100, 90)]) == [[1]]  # mostly deleted: expunged
    with pytest.raises(ValueError):
        TieredMergePolicy(segments_per_tier=1)


def test_max_segment_rows_caps_what_a_merge_writes():
    """Lucene's maxMergedSegmentMB in rows: a full tier merges only its smallest segments that fit under the cap
    together; a segment no other fits with (one commit of more rows than the cap included) is never merged."""
    policy = TieredMergePolicy(segments_per_tier=4, floor_rows=10, max_rows=60)
    segments: list[tuple[int, int, int]] = [(0, 200, 200)]  # one commit larger than the cap
    next_id, written = 1, 0
    for _ in range(200):  # 200 commits of 5 rows
        segments.append((next_id, 5, 5))
        next_id += 1
        for group in policy.find_merges(segments):
            rows = sum(s[2] for s in segments if s[0] in group)
            assert rows <= 60 and 0 not in group
            segments = [s for s in segments if s[0] not in group] + [(next_id, rows, rows)]
            next_id += 1
            written += rows
    assert sum(s[2] for s in segments) == 1200 and (0, 200, 200) in segments
    assert len(segments) <= 1000 // 60 + 2 + 3 * 4  # segments near the cap, plus tiers below it
    uncapped = TieredMergePolicy(segments_per_tier=4, floor_rows=10)
    assert uncapped.find_merges([(i, 50, 50) for i in range(4)]) == [[0, 1, 2, 3]]
    assert policy.find_merges([(i, 50, 50) for i in range(4)]) == []  # no two fit under 60
    assert policy.find_merges([(0, 12, 12), (1, 15, 15), (2, 20, 20), (3, 35, 35)]) == [[0, 1, 2]]  # 47 rows; 82 with the 4th
    for bad in (0, -5, 2.5, "10", True):
        with pytest.raises(ValueError, match="max_segment_rows"):
            TieredMergePolicy(max_rows=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["hnsw", "plaid"])
def test_max_segment_rows_setting_reaches_the_merges(tmp_path, name):
    kind = KINDS[name][0]
    index, rng, _ = _build(tmp_path / "ix", name, n=30, segments_per_tier=3, merge_floor_rows=4, max_segment_rows=12)
    for j in range(20):
        index.add(_docs(f"a{j}_", 3), vectors=_vectors(kind, 3, rng))
    sizes = [len(s.structure) for s in index.structure.segments]
    assert sizes[0] == 30 and max(sizes[1:]) <= 12 and sum(sizes) == 90  # the first commit is over the cap: never merged
    assert len(sizes) < 20  # merges did run, under the cap
    back = Index.open(tmp_path / "ix")
    back.add(_docs("z", 3), vectors=_vectors(kind, 3, rng))
    assert back.structure.policy.max_rows == 12 and max(len(s.structure) for s in back.structure.segments[1:]) <= 12


def test_ivfpq_segments_hold_their_entries_not_a_copy_of_the_quantizer(tmp_path, monkeypatch):
    """An IVF-PQ segment file is its inverted-list entries (list, PQ code, id); the coarse quantizer and the
    codebooks are written once, in the template. Folders whose segments are whole FAISS indexes (written
    before) open and search the same, and take new segments in the new form."""
    from mbert_retrieval.index.dense import DenseIndex
    from mbert_retrieval.index.errors import IndexCorruptError
    from mbert_retrieval.index.storage import load_arrays, save_arrays

    params = {"nlist": 64, "pq_m": 4, "pq_nbits": 8, "min_train_points": 100}
    rng = np.random.default_rng(5)
    base, extra = _unit(rng.standard_normal((3000, DIM))), _unit(rng.standard_normal((3, DIM)))
    queries = _unit(base[:20] + 0.1 * rng.standard_normal((20, DIM)))

    def build(path):
        index = Index.create(path, "dense", "ivfpq", model_id="fake/random", dim=DIM, **params)
        index.add(_docs("b", 3000), vectors=list(base))
        index.finalize()
        index.add(_docs("n", 3), vectors=list(extra))
        return index

    index = build(tmp_path / "ix")
    expected = [[(h.doc_id, h.score) for h in row] for row in index.search(queries, k=5, nprobe=8)]
    files = {p.name: p.stat().st_size for p in (tmp_path / "ix").iterdir() if p.name.startswith(("seg.", "codec."))}
    (template,) = [n for n in files if n.startswith("codec.")]
    segs = sorted(n for n in files if n.startswith("seg."))
    assert template.endswith(".faiss") and len(segs) == 2 and all(n.endswith(".ivf.safetensors") for n in segs)
    assert files[segs[1]] < 1024 < files[template]  # 3 entries of 4 + 8 + 4 bytes, a header; the quantizer: 64 x 16 floats
    assert set(load_arrays(tmp_path / "ix" / segs[1])) == {"ids", "lists", "codes"}
    back = Index.open(tmp_path / "ix")
    assert [[(h.doc_id, h.score) for h in row] for row in back.search(queries, k=5, nprobe=8)] == expected

    with monkeypatch.context() as m:  # the previous release: every segment a whole FAISS index
        m.setattr(DenseIndex, "segment_suffix", ".faiss")
        build(tmp_path / "old").close()
    assert all(p.name.endswith(".faiss") for p in (tmp_path / "old").glob("seg.*"))
    old = Index.open(tmp_path / "old")
    assert [[(h.doc_id, h.score) for h in row] for row in old.search(queries, k=5, nprobe=8)] == expected
    old.add(_docs("m", 2), vectors=list(_unit(rng.standard_normal((2, DIM)))))
    assert len(list((tmp_path / "old").glob("seg.*.ivf.safetensors"))) == 1
    assert len(Index.open(tmp_path / "old")) == 3005

    seg = tmp_path / "ix" / segs[1]
    a = load_arrays(seg)
    save_arrays(tmp_path / "bad.ivf.safetensors", {**a, "lists": a["lists"] + 64})  # a list the quantizer has not
    with pytest.raises(IndexCorruptError, match="bad.ivf.safetensors"):
        back.structure.template.empty_like().load_segment(tmp_path / "bad.ivf.safetensors")


def _reconstruction(index: Index, ids: list[str], vectors: list[np.ndarray]) -> float:
    """Mean cosine between the stored (decompressed) tokens of PLAID documents and their original tokens."""
    seg = index.structure.segments[0].structure
    iids = [index.docstore.get([i])[0].iid for i in ids]
    pos = seg._positions(np.array(iids))
    cos = []
    for p, v in zip(pos, vectors):
        a, b = seg._doc_offsets[p], seg._doc_offsets[p + 1]
        cos.append(float(np.mean(np.sum(seg.codec.decompress(np.asarray(seg._codes[a:b]), np.asarray(seg._residuals[a:b])) * v, axis=1))))
    return float(np.mean(cos))


@pytest.mark.parametrize("name", ["ivfpq", "plaid"])
def test_retrain_after_drift_reencodes_every_row(tmp_path, name):
    """Data that drifted away from what the index was trained on: `compact(retrain=True)` trains the shared
    state again (a new codec / quantizer file) and re-encodes every live row into one segment with it."""
    kind = KINDS[name][0]
    index, rng, _ = _build(tmp_path / "ix", name, n=150, **({"keep_full_vectors": True, "rerank": False} if kind == "colbert" else {}))
    drifted = _vectors(kind, 150, rng)
    for v in drifted:  # a subspace the training data did not concentrate on
        v[..., 8:] = 0
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
    index.add(_docs("d", 150), vectors=drifted)
    index.compact()  # one segment, old codec
    old_template = index.structure.template_name
    q = np.stack(drifted[:40]) if kind == "dense" else drifted[:40]
    params = {"nprobe": 4, "rerank": False} if kind == "dense" else {"nprobe": 16, "ncandidates": 1000, "ndocs": 1000}
    found = lambda ix: sum(r[0].doc_id == f"d{i}" for i, r in enumerate(ix.search(q, k=1, **params)))  # noqa: E731
    before = found(index)
    if kind == "colbert":
        cos_before = _reconstruction(index, [f"d{i}" for i in range(40)], drifted[:40])
    index.compact(retrain=True)
    assert index.info()["structure"]["segments"] == 1 and index.structure.template_name != old_template
    assert old_template not in index.manifest.files and not (tmp_path / "ix" / old_template).exists()
    assert found(index) >= before
    if kind == "colbert":
        assert _reconstruction(index, [f"d{i}" for i in range(40)], drifted[:40]) > cos_before + 0.01
    back = Index.open(tmp_path / "ix")
    _check(back)
    assert len(back) == 300 and found(back) == found(index)


def test_retrain_without_full_vectors_is_refused(tmp_path):
    index, _, base = _build(tmp_path / "ix", "plaid", n=60)
    with pytest.raises(ValueError, match="keep_full_vectors"):
        index.compact(retrain=True)
    assert len(Index.open(tmp_path / "ix")) == 60


@pytest.mark.parametrize("name", ["hnsw", "plaid"])
def test_catching_up_reloads_only_new_segments(tmp_path, monkeypatch, name):
    """A long-lived reader (a server) catching up with another process's add reads the new segment only: the
    segments it has are immutable and reused (not read nor hashed again), and deletes are applied."""
    from mbert_retrieval.index import storage, sync

    kind = KINDS[name][0]
    writer, rng, base = _build(tmp_path / "ix", name, n=80)
    reader = Index.open(tmp_path / "ix")
    q = np.stack(base[:3]) if kind == "dense" else base[:3]
    reader.search(q, k=3)
    old_files = set(reader.manifest.files)
    vecs = _vectors(kind, 4, rng)
    writer.add(_docs("n", 4), vectors=vecs)
    writer.delete(["b0"])
    hashed: list[str] = []
    real = storage.verify_file
    monkeypatch.setattr(sync, "verify_file", lambda path, record, check_hash=True: (hashed.append(Path(path).name), real(path, record, check_hash))[1])
    hits = reader.search(vecs[0] if kind == "dense" else vecs[0], k=1)
    assert hits[0][0].doc_id == "n0" and len(reader) == 83
    assert hashed and not old_files & set(hashed)  # only the new segment was read and checked
    assert "b0" not in {h.doc_id for h in reader.search(q, k=5)[0]}
    _check(reader)
    writer.compact()  # everything replaced: the reader loads the merged segment
    hits = reader.search(q, k=3)
    assert reader.info()["structure"]["segments"] == 1 and "b0" not in {h.doc_id for r in hits for h in r}
    _check(reader)


def test_compact_makes_the_folder_smaller(tmp_path):
    """Deleted rows leave the chunk files, the segment and SQLite (its write-ahead log folded and truncated)."""
    index, rng, _ = _build(tmp_path / "ix", "hnsw", n=300)
    index.delete([f"b{i}" for i in range(0, 300, 2)])

    def size() -> int:
        return sum(p.stat().st_size for p in (tmp_path / "ix").rglob("*") if p.is_file())

    before = size()
    index.compact()
    assert size() < before and (tmp_path / "ix" / "docs.sqlite-wal").stat().st_size == 0
    assert len(Index.open(tmp_path / "ix")) == 150


@pytest.mark.parametrize("name", ["hnsw", "plaid"])
def test_finalize_builds_segments_in_parallel_workers(tmp_path, name):
    """`finalize(workers=3)` after adds that deferred the structure: three segments built by worker processes
    from the chunk files and the trained template, committed by one manifest; searchable and writable."""
    kind, index_type, params = KINDS[name]
    rng = np.random.default_rng(0)
    index = Index.create(tmp_path / "ix", kind, index_type, model_id="fake/random", dim=DIM, chunk_size=50, **params)
    vectors = _vectors(kind, 150, rng)
    index.add(_docs("b", 150), vectors=vectors, defer_structure=True)
    assert len(index.structure) == 0  # nothing built yet
    index.finalize(workers=3)
    info = index.info()["structure"]
    assert info["segments"] == 3 and sorted(info["segment_rows"]) == [50, 50, 50]
    _check(index)
    q = np.stack(vectors[:10]) if kind == "dense" else vectors[:10]
    params = {"ef_search": 200} if kind == "dense" else {"ncandidates": 1000, "ndocs": 1000, "nprobe": 16}
    assert [r[0].doc_id for r in index.search(q, k=1, **params)] == [f"b{i}" for i in range(10)]
    index.add(_docs("n", 2), vectors=_vectors(kind, 2, rng))
    back = Index.open(tmp_path / "ix")
    _check(back)
    assert len(back) == 152 and back.info()["structure"]["segments"] == 4


def test_a_failed_worker_commits_nothing_and_the_build_can_be_finished(tmp_path, monkeypatch):
    from mbert_retrieval.index import parallel_build

    index = Index.create(tmp_path / "ix", "dense", "hnsw", model_id="fake/random", dim=DIM, chunk_size=50)
    rng = np.random.default_rng(0)
    index.add(_docs("b", 150), vectors=_vectors("dense", 150, rng), defer_structure=True)

    def boom(jobs):
        parallel_build.build_segment(jobs[0])  # one segment file written, then a worker dies
        raise RuntimeError("a segment-building worker failed (exit code -9)")

    monkeypatch.setattr(parallel_build, "_run_processes", boom)
    with pytest.raises(RuntimeError, match="worker failed"):
        index.finalize(workers=3)
    index.close()
    monkeypatch.undo()
    back = Index.open(tmp_path / "ix")
    assert back.manifest.state == "building" and len(back) == 150
    back.finalize(workers=3)
    _check(back)
    assert back.info()["structure"]["segments"] == 3
    orphans = {p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith("seg.")} - set(back.manifest.files)
    back.add([], vectors=[])
    assert not {p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith("seg.")} - set(back.manifest.files), orphans


@pytest.mark.parametrize("name", ["hnsw", "ivfpq"])
def test_dense_folder_written_before_segments_opens(tmp_path, name):
    """A dense folder of the previous format (`dense.GGGGGG.faiss`, the whole structure) opens as one segment."""
    from mbert_retrieval.index.manifest import IndexManifest

    index, rng, base = _build(tmp_path / "ix", name, n=200)
    q = np.stack(base[:5])
    want = [[h.doc_id for h in r] for r in index.search(q, k=5)]
    seg = index.structure.segments[0].structure
    generation = index.manifest.generation
    records = seg.save(tmp_path / "ix", generation)  # the old whole-structure writer
    manifest = IndexManifest.load(tmp_path / "ix")
    manifest.files = {n: r.__dict__ for n, r in records.items()}
    manifest.params["state"] = seg.state()
    index.close()
    manifest.save(tmp_path / "ix")
    for p in [*(tmp_path / "ix").glob("seg.*"), *(tmp_path / "ix").glob("codec.*")]:
        p.unlink()
    back = Index.open(tmp_path / "ix")
    assert [[h.doc_id for h in r] for r in back.search(q, k=5)] == want
    back.add(_docs("n", 3), vectors=_vectors("dense", 3, rng))
    assert f"dense.{generation:06d}.faiss" in back.manifest.files and back.info()["structure"]["segments"] == 2
    back.close()
    assert len(Index.open(tmp_path / "ix")) == 203
