"""BM25 benchmark: the FTS5 table in the document store (what hybrid indexes use) against bm25s, same texts.

    python -m mbert_retrieval.eval.bench_bm25                          # scifact + nfcorpus from ../shared/data
    python -m mbert_retrieval.eval.bench_bm25 --datasets path/to/beir-folder --json out.json

Per dataset (BEIR test split) and engine: nDCG@10 and Recall@100 (pytrec_eval), build time, the time to add
20 documents to the built index, search QPS (top 100, one query at a time for FTS5, one batch for bm25s, which
is how each is called by hybrid search) and the on-disk size.

- Text: `document_text` (title + " " + text), the text the hybrid retriever indexes, for every engine.
- fts5: `LexicalIndex` over a fresh `DocStore` (table created first, documents committed in batches of 1000,
  so the triggers index them as an index build does); ranking FTS5 `bm25()` k1=1.2 b=0.75, tokenizer
  `porter unicode61 remove_diacritics 2`, bm25s' English stopwords dropped from queries. "add 20" = one commit
  of 20 documents; size = docs.sqlite with the table minus without it (FTS5 keeps no copy of the texts).
- bm25s: `BM25Index` as the retriever's fallback builds it (lucene, k1=1.5, b=0.75, English stopwords, no
  stemming), and bm25s with FTS5's k1=1.2 to separate the parameter from the tokenisation. "add 20" = the
  whole rebuild the bm25s path needs (it cannot add); size = its saved folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEPTH = 100
ADD = 20


def load(spec: str):
    """(name, ids, texts, query ids, query texts, qrels) of a BEIR folder or name, test split."""
    from mbert_retrieval.data import document_text
    from mbert_retrieval.eval.datasets import resolve_dataset

    path = Path(spec) if Path(spec).exists() or not (SHARED / spec).is_dir() else SHARED / spec
    ds = resolve_dataset(path if path.exists() else spec)
    data = ds.data
    ids = list(data.corpus)
    texts = [document_text(data.corpus[i]) for i in ids]
    qids = list(data.qrels)
    return ds.name, ids, texts, qids, [data.queries[q] for q in qids], data.qrels


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_fts5(ids: list[str], texts: list[str], queries: list[str], workdir: Path) -> dict[str, Any]:
    from mbert_retrieval.index.docstore import DocRow, DocStore
    from mbert_retrieval.index.lexical import LexicalIndex

    rows = [DocRow(i, d, t) for i, (d, t) in enumerate(zip(ids, texts))]
    base = ids[:-ADD], rows[:-ADD]
    store = DocStore(workdir / "docs.sqlite")
    lexical = LexicalIndex(store)

    def build() -> None:
        lexical.install()
        for start in range(0, len(base[1]), 1000):
            store.commit(base[1][start:start + 1000])

    _, build_s = _timed(build)
    _, add_s = _timed(lambda: store.commit(rows[-ADD:]))
    lexical.verify()
    runs, search_s = _timed(lambda: [lexical.search(q, k=DEPTH)[0] for q in queries])
    store.close()
    with_fts = (workdir / "docs.sqlite").stat().st_size
    plain = DocStore(workdir / "plain.sqlite")
    for start in range(0, len(rows), 1000):
        plain.commit(rows[start:start + 1000])
    plain.close()
    size = with_fts - (workdir / "plain.sqlite").stat().st_size
    return {"runs": runs, "build_s": build_s, "add_s": add_s, "search_s": search_s, "bytes": size}


def run_bm25s(ids: list[str], texts: list[str], queries: list[str], workdir: Path, **params: Any) -> dict[str, Any]:
    from mbert_retrieval.hybrid import BM25Index

    _, build_s = _timed(lambda: BM25Index.build(ids[:-ADD], texts[:-ADD], **params))
    bm25, add_s = _timed(lambda: BM25Index.build(ids, texts, **params))
    runs, search_s = _timed(lambda: bm25.search(queries, k=DEPTH))
    folder = bm25.save(workdir / "bm25")
    return {"runs": runs, "build_s": build_s, "add_s": add_s, "search_s": search_s, "bytes": _folder_bytes(folder)}


ENGINES: dict[str, Callable[..., dict[str, Any]]] = {
    "fts5": run_fts5,
    "bm25s": run_bm25s,
    "bm25s k1=1.2": lambda *a: run_bm25s(*a, k1=1.2),
}


def bench(spec: str) -> list[dict[str, Any]]:
    from mbert_retrieval.eval.metrics import evaluate_run

    name, ids, texts, qids, queries, qrels = load(spec)
    out = []
    for engine, fn in ENGINES.items():
        with tempfile.TemporaryDirectory(prefix="bench_bm25-") as tmp:
            res = fn(ids, texts, queries, Path(tmp))
        run = {q: dict(hits) for q, hits in zip(qids, res["runs"])}
        scores = evaluate_run(qrels, run, k_values=(10, DEPTH)).scores
        out.append({"dataset": name, "engine": engine, "docs": len(ids), "queries": len(qids),
                    "ndcg_at_10": scores["ndcg_at_10"], f"recall_at_{DEPTH}": scores[f"recall_at_{DEPTH}"],
                    "build_s": res["build_s"], f"add{ADD}_ms": 1000 * res["add_s"],
                    "qps": len(queries) / max(res["search_s"], 1e-9), "mb": res["bytes"] / 2**20})
    return out


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = (f"| dataset | engine | docs | queries | nDCG@10 | Recall@{DEPTH} | build s | add {ADD} docs ms | QPS | MB |\n"
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    lines = [f"| {r['dataset']} | {r['engine']} | {r['docs']} | {r['queries']} | {r['ndcg_at_10']:.4f} | "
             f"{r[f'recall_at_{DEPTH}']:.4f} | {r['build_s']:.2f} | {r[f'add{ADD}_ms']:.1f} | {r['qps']:.0f} | "
             f"{r['mb']:.1f} |" for r in rows]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m mbert_retrieval.eval.bench_bm25", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"],
                   help="BEIR folders or names (names are looked up in ../shared/data first)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = [row for spec in args.datasets for row in bench(spec)]
    print(to_markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
