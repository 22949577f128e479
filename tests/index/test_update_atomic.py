"""`Index.update` is old-or-new: a crash at any write point of an update that mixes metadata-only changes,
changed texts and new documents leaves the whole batch old or the whole batch new, and a rerun finishes it.

Crash injection: every write point of the index layer (each atomic file write and each SQLite transaction,
before and after it) is numbered; for each number the update is run on a fresh copy of the index and
"killed" there (an exception nothing catches, like a kill: the process state is dropped and the folder is
re-opened from disk)."""

from __future__ import annotations

import contextlib
import shutil

import pytest

from mbert_retrieval.index import storage
from mbert_retrieval.index.base import Index
from mbert_retrieval.index.docstore import DocRow, DocStore, FieldChange

from .conftest import TextIndex, FakeColbertModel, FakeDenseModel, make_docs


class Kill(BaseException):
    """A simulated kill -9 (a BaseException: no `except Exception` of the library swallows it)."""


class CrashPoints:
    """Numbers the write points of the index layer as they are reached; raises `Kill` at point `at`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at, self.reached = 0, 0
        write, transaction = storage.atomic_write_bytes, DocStore.transaction

        def atomic_write_bytes(path, data):
            self.point()
            rec = write(path, data)
            self.point()
            return rec

        @contextlib.contextmanager
        def txn(store):
            self.point()
            with transaction(store) as conn:
                yield conn
            self.point()

        monkeypatch.setattr(storage, "atomic_write_bytes", atomic_write_bytes)
        monkeypatch.setattr(DocStore, "transaction", txn)

    def point(self) -> None:
        self.reached += 1
        if self.reached == self.at:
            raise Kill(f"killed at write point {self.at}")

    def arm(self, at: int) -> None:
        self.at, self.reached = at, 0


def _batch(docs: list[dict], metadata_only: bool = False) -> list[dict]:
    """An update batch: metadata-only changes, changed texts, a changed title and new documents."""
    out = [{**d, "metadata": {**d["metadata"], "rev": 2}} for d in docs[:4]]  # metadata only: not re-encoded
    if metadata_only:
        return out
    out += [{**d, "text": d["text"] + " w7 w8", "metadata": {**d["metadata"], "rev": 2}} for d in docs[4:7]]
    out.append({**docs[7], "title": "a new title", "metadata": {**docs[7]["metadata"], "rev": 2}})
    out += [{"id": f"new{i}", "text": f"w{i} w{i + 1} w{i + 2}", "metadata": {"rev": 2}} for i in range(2)]
    return out


def _state(index: Index, old: dict[str, dict], new: dict[str, dict]) -> str:
    """The version every document of the batch is in ("old" or "new"), else of the batch is in that version, else a description of the mix."""
    got = {d["id"]: d for d in index.get(list(new)) if d is not None}
    versions = set()
    for doc_id, want in new.items():
        have = got.get(doc_id)
        if have is None:
            versions.add("old" if doc_id not in old else f"{doc_id} missing")
            continue
        fields = lambda d: (d["text"], d.get("title"), d.get("metadata") or {})  # noqa: E731
        versions.add("new" if fields(have) == fields(want) else "old" if doc_id in old and fields(have) == fields(old[doc_id]) else f"{doc_id}?")
    return versions.pop() if len(versions) == 1 else f"mixed {sorted(versions)}"


def _check_structure(index: Index) -> None:
    ids = index.structure.ids().tolist()
    assert len(ids) == len(set(ids)) and set(ids) == set(index.docstore.live_row_ids().tolist())


@pytest.mark.parametrize(
    "kind,index_type,model,metadata_only",
    [("dense", "flat", FakeDenseModel, False), ("colbert", "plaid", FakeColbertModel, False), ("dense", "hnsw", FakeDenseModel, True)],
)
def test_update_is_old_or_new_at_every_crash_point(tmp_path, monkeypatch, kind, index_type, model, metadata_only):
    docs = make_docs(40)
    base = tmp_path / "base"
    params = {"n_centroids": 8} if index_type == "plaid" else {}
    TextIndex.build(base, docs, kind, index_type, model(), **params).close()
    batch = _batch(docs, metadata_only)
    old = {d["id"]: {**d, "metadata": d["metadata"]} for d in docs}
    new = {d["id"]: d for d in batch}
    crash = CrashPoints(monkeypatch)
    at, outcomes = 0, {}
    while True:
        at += 1
        folder = tmp_path / f"run{at}"
        shutil.copytree(base, folder)
        crash.arm(at)
        index = TextIndex.open(folder, model())
        try:
            index.update(batch)
        except Kill:
            killed = True
        else:
            killed = False
        index.close()
        crash.arm(0)
        back = TextIndex.open(folder, model())
        state = _state(back, old, new)
        assert state in ("old", "new"), f"crash at write point {at}: {state}"
        outcomes[at] = state
        _check_structure(back)
        back.update(batch)  # a rerun finishes the update
        assert _state(back, old, new) == "new" and len(back) == len(docs) + (0 if metadata_only else 2)
        _check_structure(back)
        assert back.search(batch[-1]["text"], k=1)[0][0].doc_id == batch[-1]["id"]
        back.close()
        shutil.rmtree(folder)
        if not killed:
            break
    assert at > 4 and set(outcomes.values()) == {"old", "new"}  # the points cover both sides of the commit


def test_commit_with_field_changes_is_one_transaction(tmp_path):
    store = DocStore(tmp_path / "docs.sqlite")
    store.commit([DocRow(0, "a", "text a", None, {"v": 1}), DocRow(1, "b", "text b", None, {"v": 1})])
    with pytest.raises(Exception):  # a live duplicate: the whole transaction is rolled back
        store.commit([DocRow(2, "a", "dup")], fields=[FieldChange("b", "t", {"v": 2})])
    assert store.get(["b"])[0].metadata == {"v": 1}
    replaced = store.commit([DocRow(3, "a", "text a2")], replace=True, fields=[FieldChange("b", "t", {"v": 2})])
    assert replaced == [0]
    a, b = store.get(["a", "b"])
    assert (a.text, b.title, b.metadata) == ("text a2", "t", {"v": 2})
    store.verify_rows()  # checksums follow the changed fields
    store.close()
