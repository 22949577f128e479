"""Reading inputs: the one place where corpora, queries and relevance judgments are parsed.

Formats: BEIR folders (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), JSONL and JSON-array corpora,
CSV/TSV tables, text and Markdown files, folders of text-like files and source-code trees (the corpus
readers live in `mbert_retrieval.readers`; their public names are re-exported here), query files
(.jsonl / .tsv / .txt) and qrels (BEIR tsv or TREC).
Every malformed input raises `DataError`, whose message names the file, the line and (when relevant) the field.
`iter_*` functions stream (a corpus of any size is read in flat memory, apart from the set of ids that catches
duplicates: see `readers.corpus`); `read_*` / `load_corpus` build dicts/lists (and check for duplicate ids).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .readers.base import (
    ID_FIELDS, TEXT_FIELDS, DataError, Document, LoadReport, PathLike, ReadOptions, check_metadata, check_string,
    document_text, iter_lines,
)
from .readers.corpus import CORPUS_FORMATS, detect_format, estimate_documents, find_beir_file, iter_corpus, load_corpus
from .readers.files import CODE_LANGUAGES, SKIP_DIRS, TEXT_EXTENSIONS, iter_code_dir, read_code_dir, read_text_files
from .readers.jsonl import (
    first_char, get_id, get_text, iter_json_array, iter_json_corpus, iter_json_objects, iter_jsonl_corpus,
)
from .readers.tabular import iter_table_corpus

logger = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "Document",
    "BeirDataset",
    "LoadReport",
    "ReadOptions",
    "document_text",
    "check_string",
    "check_metadata",
    "iter_corpus",
    "iter_jsonl_corpus",
    "iter_json_corpus",
    "iter_table_corpus",
    "read_jsonl_corpus",
    "read_queries_file",
    "read_qrels_tsv",
    "read_beir_folder",
    "read_text_files",
    "read_code_dir",
    "iter_code_dir",
    "estimate_documents",
    "load_corpus",
    "detect_format",
    "CORPUS_FORMATS",
    "CODE_LANGUAGES",
    "SKIP_DIRS",
    "TEXT_EXTENSIONS",
    "ID_FIELDS",
    "TEXT_FIELDS",
]

QUERY_ID_FIELDS = ("_id", "id", "query_id", "qid")
QUERY_TEXT_FIELDS = ("text", "query")


@dataclass
class BeirDataset:
    """A retrieval test collection: corpus by id, queries by id (only those judged in `qrels`), qrels."""

    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = ""


def read_jsonl_corpus(path: PathLike) -> dict[str, Document]:
    """Read a whole JSONL corpus into {id: Document}, in file order (blank documents kept: this is the
    file as it is; `load_corpus` skips them)."""
    return {doc.id: doc for doc in iter_jsonl_corpus(path)}


# --------------------------------------------------------------------------------------------- queries
def read_queries_file(path: PathLike) -> dict[str, str]:
    """Queries by id from `.jsonl` or `.json` (JSON Lines or an array of objects; `_id`/`id` + `text`/`query`),
    `.tsv` (`id<TAB>text`, optional header) or plain text (one query per non-empty line, ids "0", "1", ... in
    order). Duplicate ids raise."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    queries: dict[str, str] = {}

    def add(qid: str, text: str, n: int, fld: str) -> None:
        if qid in queries:
            raise DataError(f"duplicate query id {qid!r}", path, n, fld)
        queries[qid] = text

    if kind in (".jsonl", ".json"):
        objects = iter_json_objects(path)
        if kind == ".json" and first_char(path) == "[":
            objects = iter_json_array(path)
        for n, obj in objects:
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, n)
            qid = get_id(obj, QUERY_ID_FIELDS, path, n)
            add(qid, get_text(obj, QUERY_TEXT_FIELDS, path, n), n, "_id")
    elif kind == ".tsv":
        for n, line in iter_lines(path):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError("expected 'id<TAB>text'", path, n)
            if n == 1 and parts[0].strip().lower() in ("id", "_id", "qid", "query-id", "query_id"):
                continue  # header
            qid = parts[0].strip()
            if not qid:
                raise DataError("empty query id", path, n, "id")
            add(qid, "\t".join(parts[1:]), n, "id")
    else:
        index = 0
        for n, line in iter_lines(path):
            if line.strip():
                add(str(index), line.strip(), n, "id")
                index += 1
    return queries


# ----------------------------------------------------------------------------------------------- qrels
def _iter_qrels(path: PathLike) -> Iterator[tuple[int, str, str, int]]:
    """Yield (line, query id, doc id, score). BEIR tsv (`query-id corpus-id score`, header optional)
    or TREC qrels (`qid iter docid rel`), split on tabs, else on whitespace."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if len(parts) == 3:
            qid, did, score = parts
        elif len(parts) == 4:
            qid, _, did, score = parts
        else:
            raise DataError(f"expected 3 (query-id, corpus-id, score) or 4 (TREC) fields, got {len(parts)}",
                            path, n)
        if n == 1 and (qid.lower() in ("query-id", "query_id", "qid") or score.lower() == "score"):
            continue  # header
        try:
            value = int(score)
        except ValueError:
            try:
                f = float(score)
            except ValueError:
                f = float("nan")
            if f != f or f != int(f):
                raise DataError(f"score must be an integer, got {score!r}", path, n, "score") from None
            value = int(f)
        if not qid or not did:
            raise DataError("empty query or corpus id", path, n, "query-id" if not qid else "corpus-id")
        yield n, qid, did, value


def read_qrels_tsv(path: PathLike) -> dict[str, dict[str, int]]:
    """Relevance judgments {query id: {doc id: score}}. A repeated (query, doc) pair with a different
    score raises DataError; an exact repeat is ignored."""
    qrels: dict[str, dict[str, int]] = {}
    for n, qid, did, score in _iter_qrels(path):
        judged = qrels.setdefault(qid, {})
        if did in judged and judged[did] != score:
            raise DataError(f"conflicting judgment for ({qid!r}, {did!r}): {judged[did]} vs {score}", path, n,
                            "score")
        judged[did] = score
    return qrels


# ------------------------------------------------------------------------------------------------ BEIR
def read_beir_folder(path: PathLike, split: str = "test") -> BeirDataset:
    """Read a BEIR folder. Queries are filtered to those judged in `qrels/<split>.tsv`; a judged query
    missing from queries.jsonl raises DataError (qrels file + line); judged documents missing from the
    corpus are logged."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError("BEIR dataset folder not found", folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise DataError(f"no qrels for split {split!r} (available: {', '.join(available) or 'none'})", qrels_path)
    corpus = read_jsonl_corpus(find_beir_file(folder, "corpus"))
    queries_path = find_beir_file(folder, "queries")
    all_queries = read_queries_file(queries_path)
    qrels: dict[str, dict[str, int]] = {}
    missing_docs = 0
    for n, qid, did, score in _iter_qrels(qrels_path):
        if qid not in all_queries:
            raise DataError(f"query id {qid!r} is not in {queries_path}", qrels_path, n, "query-id")
        judged = qrels.setdefault(qid, {})
        if did in judged and judged[did] != score:
            raise DataError(f"conflicting judgment for ({qid!r}, {did!r})", qrels_path, n, "score")
        judged[did] = score
        missing_docs += did not in corpus
    if missing_docs:
        logger.warning("%s: %d judgments point at documents missing from the corpus", qrels_path, missing_docs)
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, name=folder.name)
