import json

import pytest

from mbert_retrieval.index import Hit, Index, IndexCorruptError, IndexMismatchError, IndexStateError
from mbert_retrieval.index.docstore import DocStore

from .conftest import TextIndex, FakeColbertModel, FakeDenseModel, make_docs


def _structure_ids(index):
    ids = index.structure.ids()
    assert len(ids) == len(set(ids.tolist())), "duplicate ids in the structure"
    return set(ids.tolist())


def _live_iids(index):
    return set(index.docstore.live_iids()[0].tolist())


@pytest.mark.parametrize("index_type,params", [("flat", {}), ("hnsw", {}), ("flat", {"quantization": "int8"}), ("flat", {"quantization": "binary"})])
def test_dense_build_search_reopen(tmp_path, dense_model, index_type, params):
    docs = make_docs(120)
    index = TextIndex.build(tmp_path / "ix", docs, "dense", index_type, dense_model, chunk_size=50, **params)
    assert len(index) == 120 and index.manifest.state == "ready"
    hits = index.search(docs[7]["text"], k=3)
    assert len(hits) == 1 and isinstance(hits[0][0], Hit)
    top = hits[0][0]
    assert top.doc_id == "d7" and top.text == docs[7]["text"] and top.metadata["year"] == docs[7]["metadata"]["year"]
    assert index.search([docs[3]["text"], docs[9]["text"]], k=1)[1][0].doc_id == "d9"
    assert index.search(docs[0]["text"], k=1)[0][0].title == "title 0"
    info = index.info()
    assert info["n_documents"] == 120 and info["n_chunks"] == 3 and info["structure"]["ntotal"] == 120
    json.dumps(info)  # serialisable
    index.close()
    back = TextIndex.open(tmp_path / "ix", dense_model)
    assert [h.doc_id for h in back.search(docs[7]["text"], k=3)[0]] == [h.doc_id for h in hits[0]]
    # vector queries work without a model; text queries do not
    novec = TextIndex.open(tmp_path / "ix")
    vec = dense_model.encode_queries([docs[7]["text"]])[0]
    assert novec.search(vec, k=1)[0][0].doc_id == "d7"
    with pytest.raises(IndexStateError, match="model"):
        novec.search("text query")


def test_model_mismatch(tmp_path, dense_model):
    TextIndex.build(tmp_path / "ix", make_docs(10), "dense", "flat", dense_model).close()
    with pytest.raises(IndexMismatchError, match="dim"):
        TextIndex.open(tmp_path / "ix", FakeDenseModel(dim=16))
    with pytest.raises(IndexMismatchError, match="other/model"):
        TextIndex.open(tmp_path / "ix", FakeDenseModel(model_id="other/model"))
    with pytest.raises(IndexMismatchError):
        TextIndex.open(tmp_path / "ix", FakeColbertModel(model_id="fake/dense"))
    with pytest.raises(FileExistsError):
        TextIndex.create(tmp_path / "ix", "dense", "flat", dense_model)
    with pytest.raises(IndexMismatchError):
        TextIndex.build(tmp_path / "ix", [], "dense", "hnsw", dense_model)


def test_filters(tmp_path, dense_model):
    docs = make_docs(100)
    index = TextIndex.build(tmp_path / "ix", docs, "dense", "hnsw", dense_model)
    q = docs[4]["text"]
    for flt, check in [
        ({"lang": "en"}, lambda d: d["metadata"]["lang"] == "en"),
        ({"year": {"$gte": 2022}}, lambda d: d["metadata"]["year"] >= 2022),
        ({"year": [2015, 2016], "lang": "de"}, lambda d: d["metadata"]["year"] in (2015, 2016) and d["metadata"]["lang"] == "de"),
    ]:
        hits = index.search(q, k=100, filter=flt)[0]
        assert {h.doc_id for h in hits} == {d["id"] for d in docs if check(d)}
    assert index.search(q, k=5, filter={"year": 1900}) == [[]]
    assert index.search(q, k=3, filter={"lang": "de"}, exact_filter_threshold=0)[0][0].doc_id == "d4"


def test_add_delete_update(tmp_path):
    model = FakeDenseModel()
    docs = make_docs(60)
    index = TextIndex.build(tmp_path / "ix", docs[:40], "dense", "flat", model, chunk_size=16)
    assert index.add(docs) == 20  # existing ids skipped
    assert index.add(docs) == 0
    assert model.encoded == 60
    assert index.delete(["d1", "d2", "nope"]) == 2 and "d1" not in index and len(index) == 58
    assert all(h.doc_id not in ("d1", "d2") for h in index.search(docs[1]["text"], k=10)[0])
    new_text = "completely different words alpha beta gamma"
    assert index.update([{"id": "d5", "text": new_text}, {"id": "d1", "text": "revived w1 w2"}]) == 2
    assert index.search(new_text, k=1)[0][0].doc_id == "d5"
    assert index.get(["d5"])[0]["text"] == new_text and "d1" in index
    # metadata-only update: no re-encoding
    before = model.encoded
    assert index.update([{**docs[7], "metadata": {"year": 1999}}]) == 0
    assert model.encoded == before and index.get(["d7"])[0]["metadata"] == {"year": 1999}
    assert index.search(docs[7]["text"], k=1, filter={"year": 1999})[0][0].doc_id == "d7"
    assert _structure_ids(index) == _live_iids(index)
    with pytest.raises(ValueError, match="duplicate"):
        index.add([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    with pytest.raises(ValueError, match="'id' and 'text'"):
        index.add([{"text": "no id"}])
    index.close()
    back = TextIndex.open(tmp_path / "ix", model)
    assert len(back) == 59 and _structure_ids(back) == _live_iids(back)
    assert back.search(new_text, k=1)[0][0].doc_id == "d5"


def test_compact_dense(tmp_path, dense_model):
    docs = make_docs(50)
    index = TextIndex.build(tmp_path / "ix", docs, "dense", "hnsw", dense_model, chunk_size=10)
    index.delete([f"d{i}" for i in range(0, 50, 2)])
    expected = [h.doc_id for h in index.search(docs[3]["text"], k=5)[0]]
    old_chunks = {c.name for c in index.docstore.chunks()}
    index.compact()
    assert index.docstore.count(include_deleted=True) == 25 and index.store.n_vectors == 25
    assert not old_chunks & {c.name for c in index.docstore.chunks()}
    assert sorted(p.name for p in (tmp_path / "ix" / "chunks").iterdir()) == sorted(c.name for c in index.docstore.chunks())
    assert [h.doc_id for h in index.search(docs[3]["text"], k=5)[0]] == expected
    back = TextIndex.open(tmp_path / "ix", dense_model)
    assert [h.doc_id for h in back.search(docs[3]["text"], k=5)[0]] == expected


def test_ivfpq_lifecycle(tmp_path):
    model = FakeDenseModel()
    index = TextIndex.create(tmp_path / "ix", "dense", "ivfpq", model, chunk_size=500, nprobe=16, min_train_points=500)
    docs = make_docs(1500)
    index.add(docs[:1200])
    with pytest.raises(IndexStateError, match="did not finish: re-run `mbret index ...` to finish it"):
        index.search("w1 w2", k=3)
    index.finalize()
    assert index.structure.effective_type == "ivfpq"
    index.add(docs[1200:])  # goes into the trained structure
    assert len(index.structure) == 1500
    assert index.search(docs[1300]["text"], k=1)[0][0].doc_id == "d1300"
    back = TextIndex.open(tmp_path / "ix", model, nprobe=4)
    assert back.structure.config.nprobe == 4 and len(back.structure) == 1500


def test_resume_after_crash_while_encoding(tmp_path):
    docs = make_docs(100)
    crashing = FakeDenseModel(fail_on_call=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        TextIndex.build(tmp_path / "ix", docs, "dense", "hnsw", crashing, chunk_size=10)
    assert crashing.encoded == 30
    # the process died: a fresh run re-opens the folder and resumes
    model = FakeDenseModel()
    index = TextIndex.build(tmp_path / "ix", docs, "dense", "hnsw", model, chunk_size=10)
    assert model.encoded == 70  # committed chunks were not re-encoded
    assert len(index) == 100 and index.docstore.count(include_deleted=True) == 100
    assert _structure_ids(index) == _live_iids(index)
    assert sorted(r.doc_id for r in index.docstore.iter_documents()) == sorted(d["id"] for d in docs)
    assert index.search(docs[95]["text"], k=1)[0][0].doc_id == "d95"


def test_crash_between_chunk_file_and_commit(tmp_path, monkeypatch):
    docs = make_docs(40)
    index = TextIndex.create(tmp_path / "ix", "dense", "flat", FakeDenseModel(), chunk_size=10)
    real_commit = DocStore.commit
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("power cut")
        return real_commit(self, *a, **k)

    monkeypatch.setattr(DocStore, "commit", flaky)
    with pytest.raises(OSError):
        index.add(docs)
    assert len(list((tmp_path / "ix" / "chunks").iterdir())) == 3  # one orphan chunk file
    monkeypatch.setattr(DocStore, "commit", real_commit)
    index = TextIndex.open(tmp_path / "ix", FakeDenseModel())
    assert len(index) == 20
    index.add(docs)
    index.finalize()
    assert len(index) == 40 and _structure_ids(index) == _live_iids(index)
    assert len(list((tmp_path / "ix" / "chunks").iterdir())) == 4


def test_crash_during_checkpoint_keeps_old_manifest(tmp_path, monkeypatch, dense_model):
    from mbert_retrieval.index import manifest as manifest_mod

    docs = make_docs(30)
    index = TextIndex.build(tmp_path / "ix", docs[:20], "dense", "flat", dense_model)
    before = (tmp_path / "ix" / "manifest.json").read_text()

    def boom(*a, **k):
        raise OSError("crash while writing manifest")

    monkeypatch.setattr(manifest_mod, "atomic_write_text", boom)
    with pytest.raises(OSError):
        index.add(docs)  # documents committed, checkpoint fails
    monkeypatch.undo()
    assert (tmp_path / "ix" / "manifest.json").read_text() == before
    back = TextIndex.open(tmp_path / "ix", dense_model)  # old structure + reconciliation from the chunks
    assert len(back) == 30 and _structure_ids(back) == _live_iids(back)
    assert back.search(docs[25]["text"], k=1)[0][0].doc_id == "d25"
    back.add([])  # a writer cleans up the orphan structure file of the failed checkpoint
    assert sorted(p.name for p in (tmp_path / "ix").glob("seg.*")) == sorted(back.manifest.files)


def test_corrupt_and_truncated_files(tmp_path, dense_model):
    TextIndex.build(tmp_path / "ix", make_docs(30), "dense", "hnsw", dense_model, chunk_size=10).close()
    root = tmp_path / "ix"
    faiss_file = next(root.glob("seg.*.faiss"))
    data = bytearray(faiss_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    faiss_file.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=faiss_file.name):
        TextIndex.open(root, dense_model)
    with pytest.raises(IndexCorruptError, match=faiss_file.name):  # same size: caught without verify too
        TextIndex.open(root, dense_model, verify=False)
    data[len(data) // 2] ^= 0xFF
    faiss_file.write_bytes(bytes(data))
    TextIndex.open(root, dense_model).close()
    chunk = sorted((root / "chunks").iterdir())[1]
    chunk.write_bytes(chunk.read_bytes()[:-7])
    with pytest.raises(IndexCorruptError, match=f"{chunk.name}.*truncated"):
        TextIndex.open(root, dense_model, verify=False)
    (root / "docs.sqlite").rename(root / "moved.sqlite")
    with pytest.raises(IndexCorruptError, match="docs.sqlite"):
        TextIndex.open(root, dense_model, verify=False)
    (root / "manifest.json").write_text((root / "manifest.json").read_text()[:50])
    with pytest.raises(IndexCorruptError, match="manifest"):
        TextIndex.open(root, dense_model)


@pytest.mark.parametrize("keep", [False, True])
def test_colbert_plaid_lifecycle(tmp_path, keep):
    model = FakeColbertModel()
    docs = make_docs(200, words=12)
    index = TextIndex.build(tmp_path / "ix", docs[:150], "colbert", "plaid", model, chunk_size=50, nbits=2,
                        n_centroids=64, keep_full_vectors=keep)  # fmt: skip
    root = tmp_path / "ix"
    assert len(list((root / "chunks").iterdir())) == (3 if keep else 0)  # folded into the compressed structure
    assert index.search(docs[10]["text"], k=1)[0][0].doc_id == "d10"
    index.add(docs[150:])
    assert len(index) == 200 and index.search(docs[170]["text"], k=1)[0][0].doc_id == "d170"
    index.delete(["d170"])
    assert all(h.doc_id != "d170" for h in index.search(docs[170]["text"], k=5)[0])
    hits = index.search(docs[12]["text"], k=5, filter={"lang": "de"})[0]
    assert hits[0].doc_id == "d12" and all(h.metadata["lang"] == "de" for h in hits)
    index.compact()
    assert index.docstore.count(include_deleted=True) == 199
    assert 0 < index.info()["structure"]["bytes_per_token"] < 4 * model.dim
    back = TextIndex.open(root, model)
    assert len(back) == 199 and _structure_ids(back) == _live_iids(back)
    assert back.search(docs[42]["text"], k=1)[0][0].doc_id == "d42"
    q = model.encode_queries([docs[42]["text"]])[0]
    assert TextIndex.open(root).search(q, k=1)[0][0].doc_id == "d42"  # token-matrix query, no model


def test_colbert_flat_exact(tmp_path):
    model = FakeColbertModel()
    docs = make_docs(60) + [{"id": "empty", "text": ""}]
    index = TextIndex.build(tmp_path / "ix", docs, "colbert", "flat", model, chunk_size=25)
    res = index.search([docs[3]["text"], docs[30]["text"]], k=3)
    assert [r[0].doc_id for r in res] == ["d3", "d30"]
    index.delete(["d3"])
    assert index.search(docs[3]["text"], k=3)[0][0].doc_id != "d3"
    back = TextIndex.open(tmp_path / "ix", model)
    assert back.search(docs[30]["text"], k=1, filter={"lang": "de"})[0][0].doc_id == "d30"
    with pytest.raises(ValueError, match="quantization"):
        TextIndex.create(tmp_path / "other", "colbert", "plaid", model, quantization="int8")
    with pytest.raises(TypeError):
        TextIndex.create(tmp_path / "other2", "dense", "flat", FakeDenseModel(), bogus=3)


def test_precomputed_vectors(tmp_path):
    docs = make_docs(20)
    vecs = FakeDenseModel().encode_documents([d["text"] for d in docs])
    index = TextIndex.create(tmp_path / "ix", "dense", "flat", model_id="fake/dense", dim=32)
    assert index.add(docs, vectors=vecs) == 20
    index.finalize()
    assert index.search(vecs[4], k=1)[0][0].doc_id == "d4"
    with pytest.raises(IndexStateError):
        index.add([{"id": "new", "text": "needs a model"}])


def test_autosave_off_and_explicit_save(tmp_path, dense_model):
    docs = make_docs(40)
    index = TextIndex.build(tmp_path / "ix", docs[:20], "dense", "hnsw", dense_model, autosave=False)
    generation = index.manifest.generation
    index.add(docs[20:])
    index.delete(["d0"])
    assert index.manifest.generation == generation  # no checkpoint written
    back = TextIndex.open(tmp_path / "ix", dense_model)  # replayed from chunk files + SQLite
    assert len(back) == 39 and _structure_ids(back) == _live_iids(back)
    assert back.search(docs[30]["text"], k=1)[0][0].doc_id == "d30"
    back.close()
    index.save()
    assert index.manifest.generation == generation + 1
    assert len(list((tmp_path / "ix").glob("seg.*.faiss"))) == 2  # the build's segment and one with the later rows
    with pytest.raises(ValueError, match="k must"):
        index.search("w1", k=0)
    assert index.search([], k=3) == []


@pytest.mark.parametrize("kind,index_type,extra", [("dense", "flat", {}), ("dense", "hnsw", {}),
                                                   ("colbert", "plaid", {"nbits": 2, "n_centroids": 32})])
def test_two_processes_writing_and_reading_one_index(tmp_path, kind, index_type, extra):
    """A writes, B (opened before) reads and writes after: nothing is lost, and a long-lived reader (a server)
    sees the other's documents. Separate Index objects have separate SQLite connections, as two processes do."""
    model = FakeDenseModel() if kind == "dense" else FakeColbertModel()
    docs = make_docs(90, words=12)
    TextIndex.build(tmp_path / "ix", docs[:60], kind, index_type, model, chunk_size=20, **extra).close()
    a, b = TextIndex.open(tmp_path / "ix", model), TextIndex.open(tmp_path / "ix", model)
    a.add(docs[60:75])
    assert b.search(docs[70]["text"], k=1)[0][0].doc_id == "d70" and len(b) == 75  # the reader caught up
    b.add(docs[75:])  # the second writer starts from what the first wrote
    b.delete(["d3"])
    assert a.search(docs[80]["text"], k=1)[0][0].doc_id == "d80"
    assert all(h.doc_id != "d3" for h in a.search(docs[3]["text"], k=5)[0])
    a.close(), b.close()
    back = TextIndex.open(tmp_path / "ix", model)
    assert len(back) == 89 and _structure_ids(back) == _live_iids(back)
    for i in (10, 65, 85):
        assert back.search(docs[i]["text"], k=1)[0][0].doc_id == f"d{i}"


def test_crash_right_after_create_is_resumable(tmp_path, dense_model, monkeypatch):
    """The document store exists before the manifest: a build killed right after writing it can be re-run."""

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Index, "_assemble", crash)
    with pytest.raises(KeyboardInterrupt):
        TextIndex.create(tmp_path / "ix", "dense", "flat", dense_model)
    monkeypatch.undo()
    index = TextIndex.build(tmp_path / "ix", make_docs(5), "dense", "flat", dense_model)
    assert len(index) == 5


def test_progress_every_slice_and_one_checkpoint_per_add(tmp_path, dense_model):
    """Long builds report progress every few hundred documents (not once per 4096-document chunk), skipped
    documents count too, and one `add` of several chunks writes one checkpoint."""
    docs = make_docs(700)
    seen: list[int] = []
    index = TextIndex.create(tmp_path / "ix", "dense", "hnsw", dense_model, chunk_size=4096)
    index.add(docs[:600], progress=seen.append)
    assert sum(seen) == 600 and len(seen) >= 3 and max(seen) <= 256
    index.finalize()
    generation = index.manifest.generation
    seen.clear()
    index = TextIndex.open(tmp_path / "ix", dense_model, chunk_size=40)
    assert index.add(docs, progress=seen.append) == 100  # 600 already there: skipped, and reported
    assert sum(seen) == 700 and index.manifest.generation == generation + 1
    assert len(index) == 700 and index.search(docs[650]["text"], k=1)[0][0].doc_id == "d650"


@pytest.mark.parametrize("quantization", [None, "binary"])
def test_flat_vectors_are_stored_once(tmp_path, dense_model, quantization):
    """A flat index (float or binary codes) writes no FAISS file: it is rebuilt from the chunk files on open,
    with the same results; lossy or trained kinds keep theirs."""
    docs = make_docs(120)
    index = TextIndex.build(tmp_path / "ix", docs, "dense", "flat", dense_model, chunk_size=50, quantization=quantization)
    before = index.search(docs[7]["text"], k=5)
    index.delete(["d3"])
    index.close()
    assert not list((tmp_path / "ix").glob("dense.*")) and not list((tmp_path / "ix").glob("seg.*"))
    back = TextIndex.open(tmp_path / "ix", dense_model)
    assert len(back) == 119 and _structure_ids(back) == _live_iids(back)
    after = back.search(docs[7]["text"], k=5)
    assert [h.doc_id for h in after[0]][:4] == [h.doc_id for h in before[0] if h.doc_id != "d3"][:4]
    assert after[0][0].doc_id == "d7"
    TextIndex.build(tmp_path / "hnsw", docs, "dense", "hnsw", dense_model).close()
    assert len(list((tmp_path / "hnsw").glob("seg.*.faiss"))) == 1
