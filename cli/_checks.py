"""Checks the `mbret` commands make before they write or search: the output folder of `mbret index`, an
interrupted build (how to finish it), and query texts."""

from __future__ import annotations

import dataclasses
import shlex
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Mapping

from ._common import BadInput, plural

# What a build leaves in its folder before its manifest exists (a crash right after it started): resuming
# into such a folder needs no --force.
_INDEX_LEFTOVERS = ("docs.sqlite", ".lock", ".tmp-", "retriever.json", "chunks", "bm25")


def is_index_folder(path: Path) -> bool:
    """An index, a sharded build that has started encoding, or a folder of the former sharded layout."""
    from mbert_retrieval.distributed.legacy import is_legacy_sharded

    from ._sharded import sharded_build_started

    return (path / "manifest.json").is_file() or is_legacy_sharded(path) or sharded_build_started(path)


def check_output_folder(index_dir: Path, force: bool) -> None:
    """`mbret index` writes into a new or empty folder, an index (to resume it) or, with --force, any folder:
    a typo must not scatter index files among someone's documents."""
    if not index_dir.exists():
        return
    if not index_dir.is_dir():
        raise BadInput(f"{index_dir} is a file, not an index folder")
    if force or is_index_folder(index_dir):
        return
    entries = [p.name for p in index_dir.iterdir()]
    if all(name.startswith(_INDEX_LEFTOVERS) for name in entries):
        return
    shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
    raise BadInput(f"{index_dir} is not empty and holds no index ({shown}): choose a new folder, or pass --force "
                   "to write the index files into it anyway")


def _non_default_settings(kind: str, index_type: str, params: Mapping[str, Any]) -> list[str]:
    """`-p key=value` for the recorded settings that differ from their defaults."""
    from mbert_retrieval.index.structures import config_class, setting_names

    cls = config_class(kind, index_type)
    if cls is None:
        return []
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    out = []
    for name in setting_names(kind, index_type):
        if name in params and params[name] != defaults.get(name):
            value = params[name]
            text = "true" if value is True else "false" if value is False else "null" if value is None else str(value)
            out.append(f"-p {name}={text}")
    return out


def resume_command(index_dir: Path) -> str:
    """The `mbret index` command that finishes an interrupted build of `index_dir`, rebuilt from its manifest
    and retriever.json (model, kind, index type, non-default settings, chunk size, hybrid); the corpus is not
    recorded, so it stays CORPUS. Falls back to a generic form when the files cannot be read."""
    from mbert_retrieval.index import IndexManifest
    from mbert_retrieval.sidecar import read_sidecar

    try:
        m = IndexManifest.load(index_dir)
        sidecar = read_sidecar(index_dir)
    except Exception:  # noqa: BLE001 - a damaged folder: the generic command
        return f"mbret index CORPUS {shlex.quote(str(index_dir))} ..."
    model = sidecar.get("model_path") if sidecar.get("model_id") in (None, m.model_id) else None
    parts = ["mbret", "index", "CORPUS", str(index_dir), "--model", model or m.model_id, "--kind", m.kind,
             "--index", m.index_type]
    words = [shlex.quote(p) if p != "CORPUS" else p for p in parts]
    if m.quantization:
        words += ["--quantization", m.quantization]
    words += _non_default_settings(m.kind, m.index_type, m.params)
    if int(m.params.get("chunk_size", 4096)) != 4096:
        words += ["--chunk-size", str(m.params["chunk_size"])]
    if (shards := _embedding_shards(index_dir)) is not None:
        words += ["--shards", str(shards)]
    if sidecar.get("hybrid"):
        words.append("--hybrid")
    return " ".join(words)


def _embedding_shards(index_dir: Path) -> int | None:
    """The shard count of a sharded build still in progress in `index_dir` (its embedding shards), else None."""
    from mbert_retrieval.distributed import EMBEDDINGS_DIR, ShardStore

    if not (index_dir / EMBEDDINGS_DIR / "shards.json").is_file():
        return None
    try:
        return ShardStore.open(index_dir / EMBEDDINGS_DIR).n_shards
    except Exception:  # noqa: BLE001 - a damaged shard manifest: no hint
        return None


def require_finished(index_dir: Path) -> None:
    """Searching an interrupted build would rank only the documents committed so far (or fail deep inside
    the index): refuse it and say how to finish the build. A folder of the former sharded layout is refused
    with the command that rebuilds it (`LegacyShardedError`, exit 2)."""
    from mbert_retrieval.distributed.legacy import check_not_legacy_sharded
    from mbert_retrieval.index import IndexManifest

    from ._sharded import sharded_build_started

    index_dir = Path(index_dir)
    check_not_legacy_sharded(index_dir)
    if sharded_build_started(index_dir):
        raise BadInput(f"{index_dir} is a sharded build interrupted while encoding (no index yet): re-run the same "
                       "`mbret index ... --shards N` command to finish it")
    if not (index_dir / "manifest.json").is_file():
        return  # not an index: opening it says so
    m = IndexManifest.load(index_dir)
    if m.state != "ready":
        raise BadInput(f"{index_dir} is an interrupted build ({plural(m.n_documents, 'document')} so far): re-run "
                       f"`{resume_command(index_dir)}` (with the same corpus) to finish it")


def check_queries(queries: Mapping[str, str], source: str) -> None:
    """An empty query would be answered with arbitrary documents: refuse it."""
    for qid, text in queries.items():
        if not isinstance(text, str) or not text.strip():
            where = f"{source}: query {qid!r}" if qid else "the query"
            raise BadInput(f"{where} is empty: give some text to search for")


def check_not_busy(index_dir: Path) -> None:
    """Refuse at once (before the corpus is read or a model loaded) when another process holds the index's
    writer lock; the write itself still takes the lock, so a writer that starts in between is caught there."""
    from mbert_retrieval.index.errors import IndexStateError
    from mbert_retrieval.index.storage import writer_lock

    if not (index_dir / "manifest.json").is_file():
        return
    try:
        with writer_lock(index_dir):
            pass
    except IndexStateError as exc:
        raise IndexStateError(f"{exc}: try again when it has finished") from None
    except OSError:  # a read-only folder: the write will say so
        pass


def check_same_corpus(index_dir: Path, doc_ids: Iterable[str]) -> None:
    """Re-running `mbret index` on a finished index is a no-op for the same corpus; documents it does not hold
    mean another corpus, which `mbret add` is for (merging them silently under the name of a resume would mix
    two corpora). An unfinished build takes them: that is the resume. `doc_ids` is read (in batches) only for a
    finished index."""
    from mbert_retrieval.index import DocStore, IndexManifest

    if not (index_dir / "manifest.json").is_file() or not (index_dir / "docs.sqlite").is_file():
        return
    if IndexManifest.load(index_dir).state != "ready":
        return
    store = DocStore(index_dir / "docs.sqlite", readonly=True)  # ids only: no structure to load
    new, ids = 0, iter(doc_ids)
    try:
        while batch := list(islice(ids, 10_000)):
            new += len(batch) - len(store.live_doc_ids(batch))
    finally:
        store.close()
    if new:
        raise BadInput(f"{index_dir} is a finished index and {plural(new, 'document')} of this corpus "
                       f"{'is' if new == 1 else 'are'} not in it: use `mbret add {index_dir} CORPUS` to add "
                       "documents to an index (`mbret index` only resumes an interrupted build)")
