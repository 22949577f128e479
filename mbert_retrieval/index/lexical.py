"""BM25 over the document store: an SQLite FTS5 table kept in sync with `docs` by triggers.

The table `docs_fts` is an external-content FTS5 table over (title, text) of `docs`, keyed by the document's
internal id (`rowid = docs.iid`), tokenizer `porter unicode61 remove_diacritics 2`. Triggers on `docs` index a
live row when it is inserted, unindex it when it is tombstoned (`deleted = 1`), purged, or when its title or
text change (and re-index the new values). So every write commits its lexical index in the same SQLite
transaction as the documents: the cost is O(new data), a crash rolls both back together, and a reader sees
exactly the committed state. Only live rows are indexed: FTS5's own `rebuild` and `integrity-check`, which
read the whole content table (tombstones included), must not be used on it; `verify` does the check instead.

Ranking is FTS5's `bm25()` (k1 = 1.2, b = 0.75, title and text weighted 1, i.e. BM25 over title + text).
Queries never reach FTS5 as syntax: `match_expression` keeps the query's words only (FTS5's own token
characters), drops a short English stopword list (bm25s' list) and ORs them as quoted strings, so quotes,
`-`, `*`, `NEAR(`, `AND`/`OR`, column names (`title:`) are plain words or separators.

    lex = LexicalIndex(store)                                  # a DocStore
    lex.install()                                              # writer: table + triggers + backfill, one transaction
    lex.search(["zebra savanna"], k=5, filter={"animal": True})  # [[("zebra", 3.1...)]]

Only statements that change `docs` row by row reach the triggers: `INSERT OR REPLACE INTO docs` over an
existing iid would skip the delete trigger (SQLite fires it only with recursive_triggers on); the store
never does that (a new version is a new iid).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from .docstore import DocStore

__all__ = ["LexicalIndex", "fts5_available", "match_expression", "FTS_TABLE", "TOKENIZER", "STOPWORDS"]

FTS_TABLE = "docs_fts"
TOKENIZER = "porter unicode61 remove_diacritics 2"
# bm25s' English stopwords (`bm25s.stopwords.STOPWORDS_EN`), applied to queries: their idf is near zero anyway
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split()
)
MAX_TERMS = 512  # distinct query words kept (a whole document pasted as a query stays a bounded expression)
_WORD = re.compile(r"[^\W_]+")  # unicode61 token characters: letters and digits ("_" and punctuation separate)

_TRIGGERS = {  # name -> SQL: keep docs_fts equal to the live rows of docs, inside the writer's transaction
    "docs_fts_ai": f"""CREATE TRIGGER docs_fts_ai AFTER INSERT ON docs WHEN new.deleted = 0 BEGIN
        INSERT INTO {FTS_TABLE}(rowid, title, text) VALUES (new.iid, new.title, new.text); END""",
    "docs_fts_ad": f"""CREATE TRIGGER docs_fts_ad AFTER DELETE ON docs WHEN old.deleted = 0 BEGIN
        INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, title, text) VALUES ('delete', old.iid, old.title, old.text); END""",
    "docs_fts_au": f"""CREATE TRIGGER docs_fts_au AFTER UPDATE OF deleted, title, text ON docs BEGIN
        INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, title, text)
            SELECT 'delete', old.iid, old.title, old.text WHERE old.deleted = 0;
        INSERT INTO {FTS_TABLE}(rowid, title, text) SELECT new.iid, new.title, new.text WHERE new.deleted = 0; END""",
}
_CREATE = (f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(title, text, content='docs', content_rowid='iid', "
           f"tokenize='{TOKENIZER}')")  # fmt: skip


@functools.lru_cache(maxsize=1)
def fts5_available() -> bool:
    """Whether this Python's sqlite3 has FTS5 (else hybrid search keeps the bm25s path)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def query_terms(query: str) -> list[str]:
    """The query's distinct words (lowercased, stopwords dropped, at most MAX_TERMS), in order."""
    words = (w.lower() for w in _WORD.findall(query))
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS))[:MAX_TERMS]


def match_expression(query: str) -> str | None:
    """A safe FTS5 MATCH expression for free text: its words as quoted strings joined by OR (None: no word).
    Words hold letters and digits only, so nothing in the query can act as FTS5 syntax."""
    terms = query_terms(query)
    return " OR ".join(f'"{t}"' for t in terms) or None


class LexicalIndex:
    """BM25 search over a `DocStore`'s live documents through its FTS5 table (see the module docstring).
    Reads (`exists`, `count`, `search`) never write; `install` / `drop` are writer operations."""

    def __init__(self, store: DocStore):
        self.store = store

    # ------------------------------------------------------------------ state
    def exists(self) -> bool:
        """Whether the table and all its triggers are there (a table without its triggers would go stale:
        not used, and `install` recreates it)."""
        names = {r[0] for r in self.store._query(
            "SELECT name FROM sqlite_master WHERE name = ? OR (type = 'trigger' AND tbl_name = 'docs')", (FTS_TABLE,))}  # fmt: skip
        return FTS_TABLE in names and set(_TRIGGERS) <= names

    def count(self) -> int:
        """Documents indexed (rows of FTS5's size table: the content table would count tombstones too)."""
        return int(self.store._query(f"SELECT count(*) FROM {FTS_TABLE}_docsize")[0][0])

    def verify(self) -> None:
        """Raise ValueError naming the file when the indexed rows are not exactly the live documents."""
        live = self.store._query(
            f"SELECT count(*) FROM docs d WHERE d.deleted = 0 AND d.iid NOT IN (SELECT id FROM {FTS_TABLE}_docsize)")[0][0]  # fmt: skip
        extra = self.store._query(
            f"SELECT count(*) FROM {FTS_TABLE}_docsize s WHERE s.id NOT IN (SELECT iid FROM docs WHERE deleted = 0)")[0][0]  # fmt: skip
        if live or extra:
            raise ValueError(f"{self.store.path.name}: full-text index out of step with the documents "
                             f"({live} live documents missing, {extra} stale rows); `enable_hybrid()` rebuilds it")

    # ------------------------------------------------------------------ writer operations
    def install(self) -> int:
        """Create the table and triggers and index every live document, in one transaction (a crash leaves
        none of it). A table left without its triggers is rebuilt. Returns the documents indexed."""
        with self.store.transaction() as conn:
            _drop(conn)
            conn.execute(_CREATE)
            conn.execute(f"INSERT INTO {FTS_TABLE}(rowid, title, text) SELECT iid, title, text FROM docs WHERE deleted = 0")
            for sql in _TRIGGERS.values():
                conn.execute(sql)
            return int(conn.execute(f"SELECT count(*) FROM {FTS_TABLE}_docsize").fetchone()[0])

    def drop(self) -> None:
        """Remove the table and its triggers (hybrid search disabled)."""
        with self.store.transaction() as conn:
            _drop(conn)

    # ------------------------------------------------------------------ search
    def search(self, queries: str | Sequence[str], k: int = 10, filter: Mapping[str, Any] | None = None,
               ) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, BM25 score > 0) per query over the live documents; documents sharing no word with
        the query are left out. `filter`: a metadata filter (`compile_filter`) joined into the same query."""
        from .docstore import compile_filter

        if isinstance(queries, str):
            queries = [queries]
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        where, params = compile_filter(filter) if filter else ("1", [])
        sql = (f"SELECT d.doc_id, -f.rank FROM {FTS_TABLE} f JOIN docs d ON d.iid = f.rowid "
               f"WHERE {FTS_TABLE} MATCH ? AND d.deleted = 0 AND ({where}) ORDER BY f.rank LIMIT ?")  # fmt: skip
        out: list[list[tuple[str, float]]] = []
        for query in queries:
            expr = match_expression(query)
            if expr is None:
                out.append([])
                continue
            try:
                rows = self.store._query(sql, [expr, *params, int(k)])
            except sqlite3.OperationalError as exc:  # a filter SQLite refuses (our MATCH text is always valid)
                raise ValueError(f"invalid filter {dict(filter or {})!r}: {exc}") from exc
            out.append([(str(d), float(s)) for d, s in rows])
        return out


def _drop(conn: sqlite3.Connection) -> None:
    for name in _TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    conn.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
