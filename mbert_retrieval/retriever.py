"""`Retriever`: the small Python API for RAG applications — build or open an index folder, search it,
keep it up to date. Dense (bi-encoder) or ColBERT, optionally fused with BM25 (`hybrid=True`).

    from mbert_retrieval import Retriever

    retriever = Retriever.build("my-index", "examples/data/corpus.jsonl")   # or a list of dicts / strings
    for r in retriever.search("how do plants make sugar?", k=3):
        print(r.id, round(r.score, 3), r.title)

    retriever = Retriever.open("my-index")            # reloads the model the index was built with
    retriever.add([{"id": "new", "text": "...", "metadata": {"topic": "science"}}])
    retriever.search("...", filter={"topic": "science"})

Next to the index files, `retriever.json` records where the model was loaded from (so an index built
with the offline fallback model reopens offline) and whether a BM25 index is kept (`bm25/`).
`open` also reads sharded index folders (`mbret index --shards N`, see `retriever_sharded`): read-only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .data import DataError, Document, document_text, load_corpus
from .hybrid import BM25_DIRNAME, RRF_K, BM25Index, rrf
from .retriever_sharded import is_sharded, open_sharded

logger = logging.getLogger(__name__)

__all__ = ["Retriever", "Result", "normalize_documents", "RETRIEVER_FILE"]

RETRIEVER_FILE = "retriever.json"
CorpusLike = str | os.PathLike | Iterable[Mapping[str, Any] | str | Document]
ProgressFn = Callable[[int], None]


@dataclass
class Result:
    """One retrieved document."""

    id: str
    score: float
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        return self.id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- inputs
_ID_KEYS = ("id", "_id", "doc_id", "docid")
_TEXT_KEYS = ("text", "contents", "content")


def _one_document(item: Any, n: int, where: str) -> dict[str, Any]:
    if isinstance(item, Document):
        return {"id": item.id, "text": item.text, "title": item.title or None, "metadata": dict(item.metadata or {})}
    if isinstance(item, str):
        return {"id": str(n), "text": item, "title": None, "metadata": {}}
    if not isinstance(item, Mapping):
        raise DataError(f"document {n}: expected a dict or a string, got {type(item).__name__}", where)
    doc_id = next((item[k] for k in _ID_KEYS if k in item), None)
    if doc_id is None or isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or not str(doc_id).strip():
        raise DataError(f"document {n}: missing or invalid id (one of {', '.join(_ID_KEYS)})", where, field="id")
    text = next((item[k] for k in _TEXT_KEYS if k in item), None)
    if not isinstance(text, str):
        raise DataError(f"document {n} ({doc_id!r}): missing or non-string 'text'", where, field="text")
    title = item.get("title")
    if title is not None and not isinstance(title, str):
        raise DataError(f"document {n} ({doc_id!r}): 'title' must be a string", where, field="title")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise DataError(f"document {n} ({doc_id!r}): 'metadata' must be an object", where, field="metadata")
    return {"id": str(doc_id), "text": text, "title": title or None, "metadata": dict(metadata)}


def normalize_documents(corpus: CorpusLike, kind: str = "auto") -> list[dict[str, Any]]:
    """A path (BEIR folder, JSONL, text file, folder of text or code files; see `data.load_corpus`) or an
    iterable of dicts (`id`/`_id`, `text`, `title`, `metadata`), `Document`s or strings (ids "0", "1", ...)
    -> index documents `{"id", "text", "title", "metadata"}`. Duplicate ids raise `DataError`."""
    if isinstance(corpus, (str, os.PathLike)):
        return [_one_document(d, i, str(corpus)) for i, d in enumerate(load_corpus(corpus, kind).values())]
    if isinstance(corpus, Mapping):
        raise DataError("corpus must be a path or a list of documents, not a single dict", "<input>")
    docs, seen = [], set()
    for i, item in enumerate(corpus):
        doc = _one_document(item, i, "<input>")
        if doc["id"] in seen:
            raise DataError(f"document {i}: duplicate id {doc['id']!r}", "<input>", field="id")
        seen.add(doc["id"])
        docs.append(doc)
    return docs


# ---------------------------------------------------------------------------------------------- models
def _absolute_if_dir(name: str | None) -> str | None:
    if name is not None and os.path.isdir(os.path.expanduser(name)):
        return os.path.abspath(os.path.expanduser(name))
    return name


def load_retrieval_model(name: str | None = None, kind: str = "dense", revision: str | None = None,
                         **options: Any):
    """`hub.load_model` with local paths made absolute (so the index records a stable model id).
    `options`: encoder settings (max_batch_size, max_tokens_per_batch, device, max_length, ...)."""
    from .hub import load_model

    return load_model(_absolute_if_dir(name), kind=kind, revision=revision, **options)


def _model_path(model: Any) -> str | None:
    resolved = getattr(model, "resolved", None)
    if resolved is not None and getattr(resolved, "path", None):
        return os.path.abspath(resolved.path)
    model_id = getattr(model, "model_id", None)
    return os.path.abspath(model_id) if model_id and os.path.isdir(model_id) else None


def _read_sidecar(path: Path) -> dict[str, Any]:
    f = path / RETRIEVER_FILE
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("%s is unreadable (%s): ignoring it", f, err)
        return {}
    return data if isinstance(data, dict) else {}


# -------------------------------------------------------------------------------------------- retriever
class Retriever:
    """An index folder plus the model that queries it (and, optionally, a BM25 index for hybrid search)."""

    def __init__(self, index: Any, model: Any, hybrid: bool = False, rrf_k: int = RRF_K):
        self.index = index
        self.model = model
        self.hybrid = hybrid
        self.rrf_k = rrf_k
        self._bm25: BM25Index | None = None
        self._bm25_stamp: tuple[int, int] | None = None  # the BM25 folder on disk that `_bm25` came from
        self.resumed_from = 0  # build(): documents already in the folder when the build started

    @property
    def path(self) -> Path:
        return Path(self.index.path)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, index_dir: str | os.PathLike, corpus: CorpusLike, model: Any = None, kind: str = "dense",
              index_type: str = "flat", *, hybrid: bool = False, corpus_format: str = "auto",
              chunk_size: int = 4096, model_options: Mapping[str, Any] | None = None,
              progress: ProgressFn | None = None, **params: Any) -> "Retriever":
        """Encode `corpus` into a new index at `index_dir` and return a ready retriever.

        `model`: hub id, local path or loaded model (None: the default model for `kind`, which falls back
        to the packaged all-MiniLM-L6-v2 offline). `index_type`: flat | hnsw | ivfpq (dense), flat | plaid
        (colbert); `params`: index settings (e.g. `quantization="int8"`, `hnsw_m=32`, `nbits=4`).
        Resumable: building into a folder that holds an interrupted build of the same model continues it
        (documents already committed are not encoded again). `progress(n)` is called as documents are encoded."""
        from .index import Index

        docs = normalize_documents(corpus, corpus_format)
        if not isinstance(model, (str, type(None))):
            kind = getattr(model, "kind", kind)
        else:
            model = load_retrieval_model(model, kind, **dict(model_options or {}))
        path = Path(index_dir)
        if is_sharded(path):
            raise FileExistsError(f"{path} holds a sharded index (read-only): build into another folder")
        if (path / "manifest.json").exists():
            index = Index.open(path, model)
            m = index.manifest
            if (m.kind, m.index_type) != (kind, index_type):
                index.close()
                from .index import IndexMismatchError

                raise IndexMismatchError(f"{path} holds a {m.kind}/{m.index_type} index, not {kind}/{index_type}")
        else:
            index = Index.create(path, kind, index_type, model, chunk_size=chunk_size, **params)
        retriever = cls(index, model, hybrid=hybrid)
        retriever.resumed_from = len(index)
        try:
            retriever._write_sidecar(bm25_stale=True)
            index.add(docs, progress=progress)
            index.finalize()
            retriever._finish_build()
        except BaseException:
            index.close()
            raise
        return retriever

    @classmethod
    def open(cls, index_dir: str | os.PathLike, model: Any = None, *, hybrid: bool | None = None,
             model_options: Mapping[str, Any] | None = None, verify: bool = False, **overrides: Any) -> "Retriever":
        """Open an index folder. Without `model`, the model recorded at build time is loaded (from the
        local folder it was loaded from, else by its id). A model that does not match the index (other
        model id, dim or kind) raises `IndexMismatchError`. `overrides`: index search settings
        (nprobe, ef_search, ndocs, ...). A sharded folder is opened as a read-only `ShardedView`."""
        from .index import Index, IndexManifest, IndexMismatchError

        path = Path(index_dir)
        sharded = open_sharded(path, verify=verify, **overrides) if is_sharded(path) else None
        manifest = sharded.model_manifest if sharded is not None else IndexManifest.load(path)
        sidecar = _read_sidecar(path)
        options = dict(model_options or {})
        if model is None:
            model = cls._recorded_model(manifest, sidecar, options)
        elif isinstance(model, (str, os.PathLike)):
            model = load_retrieval_model(str(model), manifest.kind, **options)
        if getattr(model, "kind", None) != manifest.kind:
            raise IndexMismatchError(f"index {path} holds {manifest.kind!r} vectors but the model is "
                                     f"{getattr(model, 'kind', None)!r}")
        index = sharded.set_model(model) if sharded is not None else Index.open(path, model, verify=verify, **overrides)
        if hybrid is None:
            hybrid = bool(sidecar.get("hybrid", False))
        return cls(index, model, hybrid=hybrid, rrf_k=int(sidecar.get("rrf_k", RRF_K)))

    @staticmethod
    def _recorded_model(manifest: Any, sidecar: Mapping[str, Any], options: dict[str, Any]):
        from .hub import FALLBACK_MODEL_ID, fallback_model_path, load_model

        local = sidecar.get("model_path")
        if sidecar.get("model_id") not in (None, manifest.model_id):
            local = None  # the sidecar describes another build: trust the manifest
        if local and os.path.isdir(local):
            model = load_model(local, kind=manifest.kind, **options)
        elif manifest.model_id == FALLBACK_MODEL_ID:
            model = load_model(fallback_model_path(), kind=manifest.kind, **options)
        elif local or os.path.isabs(manifest.model_id):
            missing = local or manifest.model_id
            if not os.path.isdir(manifest.model_id):
                raise FileNotFoundError(f"the model this index was built with ({manifest.model_id!r}, loaded from "
                                        f"{missing}) is not there any more: pass model= explicitly")
            model = load_model(manifest.model_id, kind=manifest.kind, **options)
        else:
            model = load_model(manifest.model_id, kind=manifest.kind, revision=manifest.model_revision, **options)
            if getattr(getattr(model, "resolved", None), "fallback", False):
                raise RuntimeError(f"the index was built with {manifest.model_id!r}, which cannot be loaded (hub "
                                   "unreachable and not cached); the offline fallback model would not match it")
        model.model_id = manifest.model_id  # same files, loaded from where they are now
        model.revision = manifest.model_revision
        return model

    def _write_sidecar(self, **changes: Any) -> None:
        from .index.storage import atomic_write_text

        data = _read_sidecar(self.path)
        resolved = getattr(self.model, "resolved", None)
        data.update({
            "model_id": self.model.model_id,
            "model_path": _model_path(self.model) or data.get("model_path"),
            "kind": self.model.kind,
            "hybrid": bool(self.hybrid or data.get("hybrid", False)),
            "rrf_k": self.rrf_k,
        })
        if resolved is not None and getattr(resolved, "fallback", False):
            data["fallback"] = True
            data["fallback_message"] = resolved.message
        data.update(changes)
        atomic_write_text(self.path / RETRIEVER_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")

    @property
    def fallback_message(self) -> str | None:
        """The offline-fallback note when the model is the packaged MiniLM standing in for a default model."""
        resolved = getattr(self.model, "resolved", None)
        if resolved is not None and getattr(resolved, "fallback", False):
            return resolved.message
        return _read_sidecar(self.path).get("fallback_message")

    # ------------------------------------------------------------------ BM25
    def _finish_build(self) -> None:
        """Once every document is in: the BM25 index (hybrid), then the sidecar saying BM25 is current."""
        if self.hybrid:
            self._rebuild_bm25()
        self._write_sidecar(bm25_stale=False)

    def _rebuild_bm25(self) -> BM25Index:
        ids, texts = [], []
        for row in self.index.docstore.iter_documents():
            ids.append(row.doc_id)
            texts.append(document_text({"title": row.title, "text": row.text}))
        bm25 = BM25Index.build(ids, texts)
        bm25.save(self.path / BM25_DIRNAME)
        self._bm25, self._bm25_stamp = bm25, self._bm25_on_disk()
        return bm25

    def _bm25_on_disk(self) -> tuple[int, int] | None:
        """Identity of the BM25 folder (replaced as a whole on every save, so a new one has a new inode)."""
        try:
            st = os.stat(self.path / BM25_DIRNAME)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def bm25(self) -> BM25Index:
        """The BM25 index, (re)built when missing or out of date with the documents (reloaded when another
        process saved a newer one)."""
        stale = _read_sidecar(self.path).get("bm25_stale", False)
        if self._bm25 is not None and self._bm25_on_disk() != self._bm25_stamp:
            self._bm25 = None
        if self._bm25 is None and not stale and BM25Index.exists(self.path / BM25_DIRNAME):
            try:
                stamp = self._bm25_on_disk()
                self._bm25, self._bm25_stamp = BM25Index.load(self.path / BM25_DIRNAME), stamp
            except (ValueError, OSError) as err:
                logger.warning("rebuilding the BM25 index: %s", err)
        if self._bm25 is None or stale or len(self._bm25) != len(self.index):
            self._rebuild_bm25()
            self._write_sidecar(bm25_stale=False, hybrid=True)
        return self._bm25

    # ------------------------------------------------------------------ search
    def _allowed_ids(self, filter: Mapping[str, Any]) -> list[str]:
        if hasattr(self.index, "allowed_ids"):  # sharded
            return self.index.allowed_ids(filter)
        iids = self.index.docstore.filter_iids(filter)
        return [row.doc_id for row in self.index.docstore.get_by_iids(iids.tolist()).values()]

    def search(self, query: str | Sequence[str], k: int = 10, filter: Mapping[str, Any] | None = None, *,
               hybrid: bool | None = None, candidates: int | None = None, **params: Any,
               ) -> list[Result] | list[list[Result]]:
        """Top-`k` results for one query (-> list[Result]) or a list of queries (-> list[list[Result]]).

        `filter`: metadata filter, e.g. `{"topic": "science"}`, `{"year": {"$gte": 2020}}`,
        `{"lang": ["en", "de"]}`, `{"$or": [...]}`. `hybrid`: fuse with BM25 by reciprocal rank fusion
        (default: as the retriever was built/opened); `candidates`: depth of each list before fusion.
        `params`: per-call index settings (nprobe, ef_search, ndocs, ...)."""
        single = isinstance(query, str)
        queries = [query] if single else list(query)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not all(isinstance(q, str) for q in queries):
            raise ValueError("queries must be strings")
        if not queries:
            return []
        use_hybrid = self.hybrid if hybrid is None else hybrid
        if not use_hybrid:
            hits = self.index.search(queries, k=k, filter=filter or None, **params)
            out = [[Result(h.doc_id, h.score, h.text, h.title, dict(h.metadata or {})) for h in row] for row in hits]
        else:
            out = self._hybrid_search(queries, k, filter, candidates or max(k, 50), params)
        return out[0] if single else out

    def _hybrid_search(self, queries: list[str], k: int, filter: Mapping[str, Any] | None, depth: int,
                       params: Mapping[str, Any]) -> list[list[Result]]:
        dense = self.index.search(queries, k=depth, filter=filter or None, **params)
        allowed = self._allowed_ids(filter) if filter else None
        lexical = self.bm25().search(queries, k=depth, allowed=allowed)
        out: list[list[Result]] = []
        for hits, bm25_hits in zip(dense, lexical):
            known = {h.doc_id: h for h in hits}
            fused = rrf([[h.doc_id for h in hits], [d for d, _ in bm25_hits]], k=self.rrf_k, limit=k)
            missing = [d for d, _ in fused if d not in known]
            docs = dict(zip(missing, self.index.get(missing))) if missing else {}
            row = []
            for doc_id, score in fused:
                if doc_id in known:
                    h = known[doc_id]
                    row.append(Result(doc_id, score, h.text, h.title, dict(h.metadata or {})))
                elif docs.get(doc_id) is not None:
                    d = docs[doc_id]
                    row.append(Result(doc_id, score, d["text"], d.get("title"), dict(d.get("metadata") or {})))
            out.append(row)
        return out

    # ------------------------------------------------------------------ updates
    def _write(self, fn: Callable[[], int]) -> int:
        if getattr(self.index, "read_only", False):
            self.index.refuse_write()  # sharded index: raises, saying how to rebuild
        self._write_sidecar(bm25_stale=True)  # before touching documents: a crash leaves BM25 marked stale
        self._bm25 = None
        n = fn()
        if self.hybrid:
            self._rebuild_bm25()
            self._write_sidecar(bm25_stale=False)
        return n

    def add(self, docs: CorpusLike, progress: ProgressFn | None = None) -> int:
        """Add documents (dicts, strings, `Document`s or a corpus path); ids already present are skipped.
        Returns the number added."""
        items = normalize_documents(docs)

        def run() -> int:
            return self.index.add(items, progress=progress)  # one checkpoint for the whole call

        return self._write(run)

    def update(self, docs: CorpusLike, progress: ProgressFn | None = None) -> int:
        """Insert or replace documents by id (unchanged texts are not re-encoded). Returns the number encoded."""
        items = normalize_documents(docs)

        def run() -> int:
            return self.index.update(items, progress=progress)

        return self._write(run)

    def delete(self, ids: str | Iterable[str]) -> int:
        """Delete documents by id (unknown ids are ignored). Returns the number deleted."""
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        return self._write(lambda: self.index.delete(ids))

    # ------------------------------------------------------------------ reading
    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        return self.index.get(list(ids))

    def info(self) -> dict[str, Any]:
        """Index description (manifest, counts, disk usage) plus model and hybrid settings."""
        info = self.index.info()
        sidecar = _read_sidecar(self.path)
        info["model_path"] = sidecar.get("model_path")
        info["hybrid"] = self.hybrid
        if BM25Index.exists(self.path / BM25_DIRNAME):
            info["bm25_documents"] = json.loads((self.path / BM25_DIRNAME / "bm25.json").read_text()).get("n_docs")
        if sidecar.get("fallback"):
            info["fallback_model"] = True
        return info

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Retriever":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Retriever({str(self.path)!r}, model={self.model.model_id!r}, docs={len(self)}, hybrid={self.hybrid})"
