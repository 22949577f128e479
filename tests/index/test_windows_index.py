"""Long documents as several index rows (windows) of one document, max-pooled per document at search time."""

from __future__ import annotations

import re
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from mbert_retrieval.index import IndexCorruptError
from mbert_retrieval.index.docstore import DocStore
from mbert_retrieval.windows import WindowConfig

from .conftest import TextIndex, FakeColbertModel, FakeDenseModel, clustered, clustered_tokens, make_docs


class WordTokenizer:
    """A whitespace tokenizer with the call signature `split_windows` uses: one token per word, [CLS]/[SEP]."""

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False, **_):
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        ids = [1] * len(spans)
        out = {"input_ids": [0, *ids, 0] if add_special_tokens else ids}
        if return_offsets_mapping:
            out["offset_mapping"] = spans
        return out


class _Truncating:
    """Mixin: a fake model that reads at most `max_length` tokens ([CLS] and [SEP] included), as a real one."""

    def __init__(self, max_length: int = 16, **kw):
        super().__init__(**kw)
        self.encoder = SimpleNamespace(tokenizer=WordTokenizer(), config=SimpleNamespace(max_length=max_length))
        self.texts: list[str] = []

    def encode_documents(self, texts, show_progress=False):
        self.texts += list(texts)  # as given, before the model cuts them
        return super().encode_documents([" ".join(t.split()[: self.encoder.config.max_length - 2]) for t in texts])


class WindowDense(_Truncating, FakeDenseModel):
    pass


class WindowColbert(_Truncating, FakeColbertModel):
    pass


def _long_doc(n_words: int = 60, needle: str = "zebra") -> dict:
    words = [f"filler{i}" for i in range(n_words)]
    words[-5:-2] = [needle] * 3  # far beyond what the model reads
    return {"id": "long", "text": " ".join(words), "metadata": {"lang": "en"}}


def _corpus() -> list[dict]:
    return make_docs(20) + [_long_doc()]


def _rows(index) -> set[int]:
    ids = index.structure.ids().tolist()
    assert len(ids) == len(set(ids)), "duplicate rows in the structure"
    return set(ids)


@pytest.mark.parametrize("model_cls", [WindowDense, WindowColbert])
def test_text_deep_in_a_long_document_is_found_with_windows_only(tmp_path, model_cls):
    kind = "colbert" if model_cls is WindowColbert else "dense"
    truncated = TextIndex.build(tmp_path / "trunc", _corpus(), kind, "flat", model_cls())
    assert "long" not in [h.doc_id for h in truncated.search("zebra", k=3)[0]]
    model = model_cls()
    index = TextIndex.build(tmp_path / "win", _corpus(), kind, "flat", model, window=WindowConfig(overlap=2))
    hits = index.search("zebra", k=5)[0]
    assert hits[0].doc_id == "long" and [h.doc_id for h in hits].count("long") == 1
    start, end = hits[0].window
    assert "zebra" in hits[0].passage and hits[0].passage == _long_doc()["text"][start:end] and end - start < len(hits[0].text)
    assert all(h.window is None for h in hits[1:])  # short documents: one row, no span
    info = index.info()
    long_iid = index.docstore.get(["long"])[0].iid
    n_windows = len(index.docstore.windows_of([long_iid])[long_iid])
    assert n_windows > 2 and info["n_documents"] == 21 and info["n_windows"] == 20 + n_windows and info["n_split_documents"] == 1
    assert info["window"] == {"tokens": None, "overlap": 2, "structure": "auto"}
    assert len(index.structure) == info["n_windows"] == len(index.docstore.live_row_ids())
    assert max(len(t.split()) for t in model.texts) <= 14  # every window fits the model (no truncation)


def test_best_window_and_span_are_returned_once(tmp_path):
    """Vectors given by the caller: a document with three windows scores as its best one."""
    dim, text = 8, "aaaa bbbb cccc"
    basis = np.eye(dim, dtype=np.float32)
    docs = [{"id": "long", "text": text, "windows": [(0, 4), (5, 9), (10, 14)]}, {"id": "short", "text": "x"}]
    vectors = [np.stack([basis[0], 0.9 * basis[1] + 0.1 * basis[2], basis[3]]), 0.5 * basis[1] + 0.5 * basis[2]]
    index = TextIndex.create(tmp_path / "ix", "dense", "flat", model_id="m", dim=dim)
    index.add(docs, vectors=vectors)
    index.finalize()
    hits = index.search(basis[1], k=5)[0]
    assert [h.doc_id for h in hits] == ["long", "short"]
    assert hits[0].window == (5, 9) and hits[0].passage == "bbbb" and hits[0].score == pytest.approx(0.9)
    assert hits[1].window is None and hits[1].passage == "x"
    assert index.search(basis[3], k=1)[0][0].window == (10, 14)
    with pytest.raises(ValueError, match="'bad' has 3 windows"):
        index.add([{"id": "bad", "text": text, "windows": [(0, 4), (5, 9), (10, 14)]}], vectors=[basis[:2]])
    with pytest.raises(ValueError, match="window 1 must be"):
        index.add([{"id": "bad", "text": text, "windows": [(0, 4), (9, 5)]}], vectors=[basis[:2]])


def test_caller_spans_are_encoded_by_the_model(tmp_path):
    """`windows` given with a document and no vectors: the model encodes those spans (with or without a
    window setting); other documents follow the setting."""
    model = WindowDense()
    docs = [{"id": "given", "text": "alpha beta gamma delta", "title": "T", "windows": [(0, 10), (11, 22)]}, _long_doc()]
    index = TextIndex.build(tmp_path / "ix", docs, "dense", "flat", model)
    assert model.texts == ["T alpha beta", "T gamma delta", _long_doc()["text"]]  # no window setting: the model cuts it
    hit = index.search("gamma delta", k=1)[0][0]
    assert hit.doc_id == "given" and hit.window == (11, 22) and hit.passage == "gamma delta"
    assert index.info()["n_windows"] == 3


def test_depth_grows_until_k_documents(tmp_path):
    """One document with many windows that all beat the others: still k distinct documents come back."""
    dim = 16
    rng = np.random.default_rng(0)
    q = np.zeros(dim, np.float32)
    q[0] = 1
    many = [{"id": "many", "text": "t" * 40, "windows": [(i, i + 1) for i in range(40)]}]
    many_vecs = [np.tile(q, (40, 1)) + 0.01 * rng.standard_normal((40, dim)).astype(np.float32)]
    others = [{"id": f"o{i}", "text": "o"} for i in range(10)]
    other_vecs = list(0.5 * q + 0.2 * rng.standard_normal((10, dim)).astype(np.float32))
    index = TextIndex.create(tmp_path / "ix", "dense", "flat", model_id="m", dim=dim)
    index.add(many + others, vectors=many_vecs + other_vecs)
    index.finalize()
    hits = index.search(q, k=5)[0]
    assert hits[0].doc_id == "many" and len({h.doc_id for h in hits}) == 5
    assert len(index.search(q, k=50)[0]) == 11


KINDS = [
    ("dense", "flat", {}),
    ("dense", "hnsw", {}),
    ("dense", "flat", {"quantization": "int8"}),
    ("dense", "ivfpq", {"nlist": 4, "pq_m": 4, "pq_nbits": 4, "min_train_points": 100, "nprobe": 4}),
    ("colbert", "flat", {}),
    ("colbert", "plaid", {"nbits": 2, "n_centroids": 16}),
]


def _windowed_corpus(kind: str, dim: int = 32):
    """60 documents of 1..4 windows each (spans over a text of as many words), with their vectors."""
    rng = np.random.default_rng(1)
    docs, vectors = [], []
    for i in range(60):
        n = int(rng.integers(1, 5))
        text = " ".join(f"w{j}" for j in range(n))
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        vecs = clustered(n, dim, seed=i) if kind == "dense" else clustered_tokens(n, dim, seed=i)
        docs.append({"id": f"d{i}", "text": text, "windows": spans, "metadata": {"odd": i % 2 == 1}})
        vectors.append(vecs)
    return docs, vectors


@pytest.mark.parametrize("kind,index_type,params", KINDS, ids=[f"{k}-{t}-{len(p)}" for k, t, p in KINDS])
def test_every_index_kind(tmp_path, kind, index_type, params):
    docs, vectors = _windowed_corpus(kind)
    index = TextIndex.create(tmp_path / "ix", kind, index_type, model_id="m", dim=32, chunk_size=25, **params)
    index.add(docs, vectors=vectors)
    index.finalize()
    n_rows = sum(len(d["windows"]) for d in docs)
    assert len(index.structure) == n_rows and index.info()["n_windows"] == n_rows and len(index) == 60
    target, w = 17, len(docs[17]["windows"]) - 1
    query = vectors[target][w] if kind == "dense" else vectors[target][w][:4]
    hits = index.search(query, k=5)[0]
    assert hits[0].doc_id == "d17" and hits[0].window == docs[17]["windows"][w]
    assert len({h.doc_id for h in hits}) == len(hits) == 5
    odd = index.search(query, k=5, filter={"odd": False})[0]
    assert odd and all(not h.metadata["odd"] for h in odd) and "d17" not in [h.doc_id for h in odd]
    even = index.search(query, k=5, filter={"odd": True})[0]
    assert even[0].doc_id == "d17" and even[0].window == docs[17]["windows"][w] and all(h.metadata["odd"] for h in even)
    index.delete(["d17"])
    assert "d17" not in [h.doc_id for h in index.search(query, k=5)[0]]
    assert len(index.structure) == n_rows - len(docs[17]["windows"])
    index.close()
    back = TextIndex.open(tmp_path / "ix")
    assert _rows(back) == set(back.docstore.live_row_ids().tolist())
    assert back.search(vectors[3][0] if kind == "dense" else vectors[3][0][:4], k=1)[0][0].doc_id == "d3"


def test_update_delete_compact_reopen(tmp_path):
    model = WindowDense()
    index = TextIndex.build(tmp_path / "ix", _corpus(), "dense", "flat", model, window=True, chunk_size=8)
    long_iid = index.docstore.get(["long"])[0].iid
    old_rows = set(index.docstore.row_ids([long_iid]).tolist())
    assert len(old_rows) > 2 and long_iid not in old_rows and old_rows <= _rows(index)
    index.update([{"id": "long", "text": _long_doc(needle="okapi")["text"]}])
    assert not old_rows & _rows(index)  # every window of the old version left the structure
    assert index.search("okapi", k=1)[0][0].doc_id == "long"
    assert "long" not in [h.doc_id for h in index.search("zebra", k=3)[0]]
    index.delete(["long"])
    assert "long" not in [h.doc_id for h in index.search("okapi", k=21)[0]] and len(index.structure) == 20
    index.add([_long_doc()])
    index.compact()
    new_iid = index.docstore.get(["long"])[0].iid
    assert index.docstore.window_counts()[0] == len(index.docstore.windows_of([new_iid])[new_iid])
    n_stored = index.docstore._query("SELECT count(*) FROM windows")[0][0]
    assert n_stored == index.docstore.window_counts()[0]  # windows of deleted versions purged
    index.close()
    back = TextIndex.open(tmp_path / "ix", WindowDense(), verify=True)
    assert back.search("zebra", k=1)[0][0].doc_id == "long"
    assert _rows(back) == set(back.docstore.live_row_ids().tolist()) and len(back.structure) == back.info()["n_windows"]


def test_crash_between_chunk_file_and_commit(tmp_path, monkeypatch):
    docs = make_docs(12) + [_long_doc(needle=f"needle{i}") | {"id": f"long{i}"} for i in range(4)]
    index = TextIndex.create(tmp_path / "ix", "dense", "flat", WindowDense(), chunk_size=4, window=WindowConfig())
    real_commit = DocStore.commit
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("power cut")
        return real_commit(self, *a, **k)

    monkeypatch.setattr(DocStore, "commit", flaky)
    with pytest.raises(OSError):
        index.add(docs)
    monkeypatch.setattr(DocStore, "commit", real_commit)
    index = TextIndex.build(tmp_path / "ix", docs, "dense", "flat", WindowDense())
    assert len(index) == 16 and index.docstore.count(include_deleted=True) == 16
    assert _rows(index) == set(index.docstore.live_row_ids().tolist())
    assert index.docstore.window_counts()[1] == 4
    assert index.docstore._query("SELECT count(*) FROM windows")[0][0] == index.docstore.window_counts()[0]  # no duplicates
    for i in range(4):
        assert index.search(f"needle{i}", k=1)[0][0].doc_id == f"long{i}"


def test_a_reader_sees_the_windows_another_writer_added(tmp_path):
    """Separate Index objects (separate SQLite connections, as two processes): the reader's row -> document
    map follows what the writer commits."""
    TextIndex.build(tmp_path / "ix", make_docs(20), "dense", "flat", WindowDense(), window=True).close()
    writer, reader = TextIndex.open(tmp_path / "ix", WindowDense()), TextIndex.open(tmp_path / "ix", WindowDense())
    assert reader.search("zebra", k=1)[0][0].window is None  # map loaded: no windows yet
    writer.add([_long_doc()])
    hit = reader.search("zebra", k=1)[0][0]
    assert hit.doc_id == "long" and "zebra" in hit.passage
    writer.update([{"id": "long", "text": _long_doc(needle="okapi")["text"]}])
    hits = reader.search("okapi", k=3)[0]
    assert hits[0].doc_id == "long" and "okapi" in hits[0].passage and [h.doc_id for h in hits].count("long") == 1
    writer.close(), reader.close()


def test_index_without_windows_opens_and_stays_as_it_was(tmp_path, dense_model):
    """A store written before windows existed (no windows table) opens read-only unchanged, and the next
    writer adds the table."""
    docs = make_docs(30)
    TextIndex.build(tmp_path / "ix", docs, "dense", "flat", dense_model).close()
    conn = sqlite3.connect(tmp_path / "ix" / "docs.sqlite")
    conn.execute("DROP TABLE windows")
    conn.commit()
    conn.close()
    index = TextIndex.open(tmp_path / "ix", dense_model)
    assert not index.docstore.has_windows()
    info = index.info()
    assert info["n_windows"] == info["n_documents"] == 30 and info["n_split_documents"] == 0 and info["window"] is None
    hits = index.search(docs[4]["text"], k=3, filter={"lang": "en"})[0]
    assert hits[0].doc_id != "d4" and all(h.window is None for h in hits)
    assert index.search(docs[4]["text"], k=1)[0][0].doc_id == "d4"
    assert not index.docstore.has_windows()  # reading did not change the store
    index.add(make_docs(31)[30:])
    assert index.docstore.has_windows() and len(index) == 31


def test_window_setting_is_validated_and_not_a_structure_or_session_setting(tmp_path):
    with pytest.raises(ValueError, match="unknown window settings"):
        TextIndex.create(tmp_path / "a", "dense", "flat", WindowDense(), window={"size": 3})
    with pytest.raises(ValueError, match="window overlap"):
        TextIndex.create(tmp_path / "b", "dense", "flat", WindowDense(), window={"tokens": 16, "overlap": 8})
    with pytest.raises(ValueError, match="tokenizer"):
        TextIndex.create(tmp_path / "d", "dense", "flat", FakeDenseModel(), window=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "d").exists()
    TextIndex.create(tmp_path / "c", "colbert", "flat", WindowColbert(), window=WindowConfig(tokens=64)).close()  # ColBERT flat takes no settings
    with pytest.raises(TypeError, match="unknown index settings"):
        TextIndex.open(tmp_path / "c", window=None)


def test_window_rows_are_checksummed(tmp_path):
    index = TextIndex.build(tmp_path / "ix", _corpus(), "dense", "flat", WindowDense(), window=True)
    index.close()
    conn = sqlite3.connect(tmp_path / "ix" / "docs.sqlite")
    conn.execute("UPDATE windows SET end_char = end_char + 1 WHERE iid = (SELECT max(iid) FROM windows)")
    conn.commit()
    conn.close()
    TextIndex.open(tmp_path / "ix", verify=False).close()
    with pytest.raises(IndexCorruptError, match="window"):
        TextIndex.open(tmp_path / "ix", verify=True)


@pytest.mark.parametrize("kind", ["dense", "colbert"])
def test_real_tokenizer_windows_fit_the_model(tmp_path, minilm_path, kind):
    """A real (small) model that reads 32 tokens (ColBERT: document_length 32, [D] marker included): every
    window, title and special tokens included, fits it, and a phrase at the end of a long document is found
    through its window."""
    from mbert_retrieval.hub import load_model

    model = load_model(minilm_path, kind=kind, max_length=32 if kind == "dense" else 512)
    if kind == "colbert":
        model.config.document_length = 32
    words = [f"word{i % 17}" for i in range(150)] + ["volcanic eruption lava magma"]
    docs = [{"id": "long", "text": " ".join(words), "title": "A title"}, {"id": "other", "text": "a recipe for bread and butter"}]
    index = TextIndex.build(tmp_path / "ix", docs, kind, "flat", model, window=WindowConfig())
    long_iid = index.docstore.get(["long"])[0].iid
    windows = index.docstore.windows_of([long_iid])[long_iid]
    assert len(windows) > 3 and windows[0].start == 0 and windows[-1].end == len(docs[0]["text"])
    texts = [f"A title {docs[0]['text'][w.start : w.end]}" for w in windows]
    if kind == "dense":
        lengths = [len(ids) for ids in model.encoder.tokenizer(texts)["input_ids"]]
    else:
        lengths = [len(ids) for ids in model._tokenize(texts, is_query=False, truncate=False)]
    assert max(lengths) <= 32
    hit = index.search("volcanic eruption lava magma", k=1)[0][0]
    assert hit.doc_id == "long" and "volcanic" in hit.passage


def test_docstore_rows_of_documents_with_and_without_windows(tmp_path):
    from mbert_retrieval.index.docstore import DocRow, WindowRow

    store = DocStore(tmp_path / "docs.sqlite")
    store.commit([DocRow(0, "plain", "p"), DocRow(1, "long", "aaa bbb")], windows=[WindowRow(2, 1, 0, 3), WindowRow(3, 1, 4, 7)])
    assert store.counters()[0] == 4  # window iids come from the documents' counter
    assert store.live_row_ids().tolist() == [0, 2, 3] and store.live_iids()[0].tolist() == [0, 1]
    assert store.row_ids([1]).tolist() == [2, 3] and store.row_ids([0, 1]).tolist() == [0, 2, 3]
    assert store.window_counts() == (2, 1) and store.window_map(after=2)[0].tolist() == [3]
    replaced = store.commit([DocRow(4, "long", "ccc")], replace=True)
    assert replaced == [1] and store.row_ids(replaced).tolist() == [2, 3]  # a tombstoned document's rows
    assert store.live_row_ids().tolist() == [0, 4] and store.window_counts() == (0, 0)
    store.verify_rows()
    assert store.purge_deleted() == 1 and store.window_map()[0].tolist() == [] and store.windows_of([1]) == {}
    store.close()


def test_one_huge_document_shows_its_own_encoding_progress(tmp_path):
    """A document split into thousands of windows is encoded in one model call: with progress on, that call
    shows a bar of its own (minutes without a sign of life otherwise); short slices keep the quiet call."""
    seen: list[tuple[int, bool]] = []

    class Recording(WindowDense):
        def encode_documents(self, texts, show_progress=False):
            seen.append((len(texts), show_progress))
            return super().encode_documents(texts)

    huge = {"id": "huge", "text": " ".join(f"w{i % 300}" for i in range(14 * 1100))}  # 1,100 windows of 14 words
    TextIndex.build(tmp_path / "ix", [*make_docs(5), huge], "dense", "flat", Recording(), window=WindowConfig(overlap=0), show_progress=True).close()
    assert max(seen)[0] > 1024 and max(seen)[1] is True
    seen.clear()
    TextIndex.build(tmp_path / "small", make_docs(50), "dense", "flat", Recording(), window=WindowConfig(overlap=0), show_progress=True).close()
    assert seen and not any(show for _, show in seen)
