"""Every file of an index folder is bound to its manifest, names read from index files stay inside the folder,
and the `Index` facade refuses input it cannot answer sensibly (empty query, unfinished build, filter typo)."""

import hashlib
import json
import shutil
import sqlite3

import numpy as np
import pytest

from mbert_retrieval.index import Index, IndexCorruptError, IndexMismatchError, IndexStateError
from mbert_retrieval.index.errors import FilterFieldError
from mbert_retrieval.index.manifest import FORMAT_VERSION
from mbert_retrieval.index.storage import load_arrays, save_arrays

from .conftest import TextIndex, FakeDenseModel, make_docs


def _build(path, docs=None, **kw):
    TextIndex.build(path, docs or make_docs(40), "dense", "flat", FakeDenseModel(), chunk_size=10, **kw).close()
    return path


def _sql(path, sql, params=()):
    conn = sqlite3.connect(path / "docs.sqlite")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


# ----------------------------------------------------------------- files bound to the manifest
def test_docs_sqlite_of_another_index_is_refused(tmp_path):
    a, b = _build(tmp_path / "a"), _build(tmp_path / "b")  # same documents: same-size stores
    assert (a / "docs.sqlite").stat().st_size == (b / "docs.sqlite").stat().st_size
    shutil.copy(b / "docs.sqlite", a / "docs.sqlite")
    for verify in (False, True):
        with pytest.raises(IndexCorruptError, match="docs.sqlite.*another index"):
            TextIndex.open(a, verify=verify)


def test_older_copy_of_docs_sqlite_is_refused(tmp_path):
    root = _build(tmp_path / "ix")
    shutil.copy(root / "docs.sqlite", tmp_path / "backup.sqlite")
    with TextIndex.open(root, FakeDenseModel()) as index:
        index.delete(["d1"])  # a checkpoint: the store moves on with the manifest
    shutil.copy(tmp_path / "backup.sqlite", root / "docs.sqlite")
    with pytest.raises(IndexCorruptError, match="docs.sqlite.*generation"):
        TextIndex.open(root, verify=False)


def test_chunk_file_of_another_index_or_chunk_is_refused(tmp_path):
    a, b = _build(tmp_path / "a"), _build(tmp_path / "b")
    chunk = sorted((a / "chunks").iterdir())[1]
    shutil.copy(b / "chunks" / chunk.name, chunk)  # same size, other index
    with pytest.raises(IndexCorruptError, match=f"{chunk.name}.*another index"):
        TextIndex.open(a, verify=False)
    first = sorted((b / "chunks").iterdir())[0]
    shutil.copy(first, b / "chunks" / chunk.name)  # another chunk of the same index
    with pytest.raises(IndexCorruptError, match=f"{chunk.name}.*holds chunk 0"):
        TextIndex.open(b, verify=False)


def test_one_byte_edit_of_a_stored_text_is_caught_by_verify(tmp_path):
    docs = make_docs(40)
    root = _build(tmp_path / "ix", docs)
    data = bytearray((root / "docs.sqlite").read_bytes())
    at = data.find(docs[17]["text"].encode())
    assert at >= 0 and data.find(docs[17]["text"].encode(), at + 1) == -1
    data[at] = ord("x")  # "w..." -> "x...": same length, still valid UTF-8
    (root / "docs.sqlite").write_bytes(bytes(data))
    TextIndex.open(root, verify=False).close()  # the cheap open does not read every row
    with pytest.raises(IndexCorruptError, match="docs.sqlite.*'d17'.*checksum"):
        TextIndex.open(root, verify=True)


@pytest.mark.parametrize("name", ["../../outside.safetensors", "/tmp/x.safetensors"])
def test_chunk_path_outside_the_folder_is_refused(tmp_path, name):
    root = _build(tmp_path / "ix")
    outside = tmp_path / "outside.safetensors"
    shutil.copy(next((root / "chunks").iterdir()), outside)
    _sql(root, "UPDATE chunks SET name = ? WHERE seq = 0", (name,))
    with pytest.raises(IndexCorruptError, match="not a plain file name"):
        TextIndex.open(root, verify=False)
    assert outside.exists()


def _make_format_1(root):
    """Turn a fresh index folder into what format 1 wrote: no index id anywhere, no row checksums."""
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["index_id"], manifest["model_fingerprint"]
    manifest["format_version"] = 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    conn = sqlite3.connect(root / "docs.sqlite")
    conn.execute("DELETE FROM meta WHERE key NOT IN ('next_iid', 'next_chunk')")
    conn.execute("ALTER TABLE docs DROP COLUMN checksum")
    for seq, name in conn.execute("SELECT seq, name FROM chunks").fetchall():
        save_arrays(root / "chunks" / name, load_arrays(root / "chunks" / name), metadata={"kind": "dense"})
        blob = (root / "chunks" / name).read_bytes()
        conn.execute("UPDATE chunks SET sha256 = ?, bytes = ? WHERE seq = ?", (hashlib.sha256(blob).hexdigest(), len(blob), seq))
    conn.commit()
    conn.close()


def test_format_1_index_opens_and_is_bound_on_its_next_write(tmp_path):
    docs = make_docs(50)
    root = _build(tmp_path / "ix", docs[:40])
    _make_format_1(root)
    model = FakeDenseModel()
    with TextIndex.open(root, model) as index:  # verify=True: old rows have no checksum yet, fine
        assert index.manifest.index_id is None and index.search(docs[5]["text"], k=1)[0][0].doc_id == "d5"
    conn = sqlite3.connect(root / "docs.sqlite")
    assert "checksum" not in {r[1] for r in conn.execute("PRAGMA table_info(docs)")}  # a read changes nothing
    conn.close()
    shutil.copytree(root, tmp_path / "copy")
    with TextIndex.open(root, model) as index:
        index.add(docs[40:])
        assert index.manifest.index_id is not None and index.manifest.format_version == FORMAT_VERSION
    back = TextIndex.open(root, model)
    assert len(back) == 50 and back.search(docs[45]["text"], k=1)[0][0].doc_id == "d45"
    back.close()
    shutil.copy(tmp_path / "copy" / "docs.sqlite", root / "docs.sqlite")  # the unbound store comes back
    with pytest.raises(IndexCorruptError, match="docs.sqlite"):
        TextIndex.open(root, verify=False)
    with TextIndex.open(tmp_path / "copy", model) as index:  # a writer checksums the rows it finds unchecked
        index.add([{"id": "new", "text": "w1 w2"}])
    _sql(tmp_path / "copy", "UPDATE docs SET text = 'edited' WHERE doc_id = 'd3'")
    with pytest.raises(IndexCorruptError, match="'d3'"):
        TextIndex.open(tmp_path / "copy", verify=True)


# ----------------------------------------------------------------- model fingerprint
def test_model_with_other_weights_is_refused(tmp_path):
    model = FakeDenseModel()
    model.fingerprint = "sha256:1111"
    TextIndex.build(tmp_path / "ix", make_docs(10), "dense", "flat", model).close()
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["model_fingerprint"] == "sha256:1111"
    TextIndex.open(tmp_path / "ix", model).close()
    TextIndex.open(tmp_path / "ix", FakeDenseModel()).close()  # no fingerprint to compare
    changed = FakeDenseModel()
    changed.fingerprint = "sha256:2222"
    with pytest.raises(IndexMismatchError, match="different weights of fake/dense"):
        TextIndex.open(tmp_path / "ix", changed)


# ----------------------------------------------------------------- search input
@pytest.fixture
def built(tmp_path, dense_model):
    index = TextIndex.build(tmp_path / "ix", make_docs(30), "dense", "flat", dense_model)
    yield index
    index.close()


@pytest.mark.parametrize("query", ["", "   \n", ["w1 w2", " "]])
def test_empty_query_is_refused(built, query):
    with pytest.raises(ValueError, match="empty query"):
        built.search(query, k=3)


def test_filter_on_a_field_no_document_has(built):
    with pytest.raises(FilterFieldError, match="filter field 'yeer' is in no document; fields present: lang, tags, year"):
        built.search("w1", k=3, filter={"yeer": {"$gte": 2019}})
    with pytest.raises(ValueError, match="'yeer', 'lnag'"):
        built.search("w1", k=3, filter={"yeer": 1, "lnag": "en"})
    assert built.search("w1", k=3, filter={"year": {"$gte": 3000}}) == [[]]  # a real field, no match: no error
    assert len(built.search("w1", k=3, filter={"yeer": {"$exists": False}})[0]) == 3


def test_unfinished_build_is_refused(tmp_path, dense_model):
    index = TextIndex.create(tmp_path / "ix", "dense", "flat", dense_model)
    index.add(make_docs(10))
    index.close()
    with pytest.raises(IndexStateError, match=r"the build of .*ix did not finish: re-run `mbret index \.\.\.` to finish it"):
        TextIndex.open(tmp_path / "ix", dense_model).search("w1", k=1)


# ----------------------------------------------------------------- commit by time as well as by count
class SlowModel(FakeDenseModel):
    """Every encode call takes `seconds` of a fake clock; `interrupt_on_call` raises KeyboardInterrupt (Ctrl-C)."""

    def __init__(self, clock, seconds=20.0, interrupt_on_call=None):
        super().__init__()
        self.clock, self.seconds, self.interrupt_on_call = clock, seconds, interrupt_on_call

    def encode_documents(self, texts, show_progress=False):
        if self.interrupt_on_call is not None and self.calls + 1 == self.interrupt_on_call:
            raise KeyboardInterrupt
        self.clock["t"] += self.seconds
        return super().encode_documents(texts, show_progress)


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 0.0}
    monkeypatch.setattr(Index, "_clock", staticmethod(lambda: now["t"]))
    return now


def test_slow_encoding_commits_by_time(tmp_path, clock):
    docs = make_docs(600)
    index = TextIndex.create(tmp_path / "ix", "dense", "flat", SlowModel(clock), chunk_size=4096, commit_seconds=30)
    index.add(docs)  # 3 encode calls of 20 s: the first two are committed at 40 s, the rest at the end
    assert [c.n_docs for c in index.docstore.chunks()] == [512, 88]
    index.finalize()
    assert index.search(docs[550]["text"], k=1)[0][0].doc_id == "d550"


def test_ctrl_c_keeps_what_was_encoded_before_the_last_commit_time(tmp_path, clock):
    docs = make_docs(1000)
    interrupted = SlowModel(clock, interrupt_on_call=4)
    with pytest.raises(KeyboardInterrupt):
        TextIndex.build(tmp_path / "ix", docs, "dense", "flat", interrupted, commit_seconds=30)
    assert len(TextIndex.open(tmp_path / "ix")) == 512  # not 0: the first 4096-document chunk was never full
    resumed = SlowModel(clock)
    index = TextIndex.build(tmp_path / "ix", docs, "dense", "flat", resumed)
    assert resumed.encoded == 1000 - 512 and len(index) == 1000
    assert index.manifest.params["commit_seconds"] == 30


def test_commit_seconds_is_validated_and_overridable(tmp_path, dense_model, clock):
    with pytest.raises(ValueError, match="commit_seconds"):
        TextIndex.create(tmp_path / "bad", "dense", "flat", dense_model, commit_seconds=0)
    TextIndex.create(tmp_path / "ix", "dense", "flat", dense_model).close()
    index = TextIndex.open(tmp_path / "ix", SlowModel(clock, seconds=1.0), commit_seconds=0.5)
    index.add(make_docs(300))
    assert [c.n_docs for c in index.docstore.chunks()] == [256, 44]
    assert np.isclose(index.commit_seconds, 0.5)


def test_open_rereads_a_manifest_that_another_process_outdated(tmp_path, monkeypatch):
    """A reader that read manifest.json just before a writer checkpointed twice reads it again (no false alarm);
    a store that stays ahead is refused."""
    from mbert_retrieval.index.manifest import IndexManifest

    root = _build(tmp_path / "ix")
    real_load = IndexManifest.load.__func__
    calls = {"n": 0, "stale_for": 1}

    def load(cls, directory):
        calls["n"] += 1
        m = real_load(cls, directory)
        if calls["n"] <= calls["stale_for"]:
            m.generation -= 2
        return m

    monkeypatch.setattr(IndexManifest, "load", classmethod(load))
    TextIndex.open(root, verify=False).close()
    assert calls["n"] == 2
    calls.update(n=0, stale_for=99)
    with pytest.raises(IndexCorruptError, match="docs.sqlite.*generation"):
        TextIndex.open(root, verify=False)


