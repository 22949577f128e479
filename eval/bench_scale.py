"""Index cost curve on synthetic data: build, add 20 documents, search and memory as the index grows.

    python -m mbert_retrieval.eval.bench_scale --markdown --json runs/bench_scale.json  # full run: ~8-11 min on 2 idle cores
    python -m mbert_retrieval.eval.bench_scale --sizes 1000 10000 --plaid-sizes 1000 5000 --stream-sizes 10000
    python -m mbert_retrieval.eval.bench_scale --stream-1m --kinds dense-flat  # + a 1M-document streaming ingest
    python -m mbert_retrieval.eval.bench_scale --smoke                         # tiny sizes, ~10-40 s (the test)

Only the public `Index` API is used (create / add(docs, vectors=...) / finalize / open / search / info), with
precomputed vectors and no model, so the same script measures the engine before and after a redesign.

Data (deterministic, `--seed`): documents are short sentences (6-14 words) from a fixed pseudo-word vocabulary;
dense vectors are random unit vectors (`--dim`, 384); ColBERT documents are random unit token matrices of
32-64 tokens x `--colbert-dim` (128). PLAID sizes are smaller (`--plaid-sizes`, 1k/3k/10k documents, i.e. up to
~480k token vectors) because a PLAID index of N documents holds ~48 N token vectors and its k-means grows with
them (at 30k documents it alone takes ~10 CPU minutes). Queries are perturbed copies of
random indexed documents (dense: the vector plus noise; ColBERT: its first 32 tokens plus noise), so
`self@k` (share of queries whose source document is in the top k) checks that the index really finds things.

Per kind and size, in a fresh subprocess (so that peak memory is per kind and size):
- build: create + add (generator of documents and vectors) + finalize, seconds (data generation excluded);
- open: `Index.open(verify=False)` seconds; index bytes = the folder's files after the build;
- search: all `--queries` (PLAID: `--plaid-queries`) in one call, k=10, after a 2-query warm-up, best of up to 3 passes: QPS and self@k;
- add: 20 new documents added to the ready index: seconds; bytes written, measured two ways:
  * files: sum of the sizes of the files that are new, replaced (new inode: written whole and renamed) or
    changed in place (same inode, size or mtime changed: SQLite pages; counted whole, so an upper bound);
    `rewrite %` = that sum / the index's bytes;
  * io: the process's `wchar` (bytes passed to write calls) and `write_bytes` (bytes sent to the block
    layer) deltas from /proc/self/io during the add (Linux only; '-' elsewhere);
  `found` = how many of the added documents a search with their own vectors returns in the top k;
- memory: peak RSS of the process (getrusage maxrss) after the build, after the search and after the add,
  and its RSS before the build (interpreter + libraries).
Streaming ingest (`--stream-sizes`, default 10k and 100k; `--stream-1m` adds 1M): `Index.add` fed by
generators of N short documents and their `--stream-dim` (64) vectors, then finalize, in a fresh process:
peak RSS after the add and after finalize, against the size of the vectors themselves, to show whether
memory stays flat as the corpus grows (a structure held in memory, such as FAISS flat, grows by its vectors).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch + faiss OpenMP runtimes side by side
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from .bench_scale_report import print_report, to_markdown  # noqa: E402

__all__ = ["KINDS", "Synthetic", "FileState", "WriteDiff", "snapshot", "diff_folders", "io_counters", "main"]

KINDS: dict[str, tuple[str, str]] = {
    "dense-flat": ("dense", "flat"),
    "dense-hnsw": ("dense", "hnsw"),
    "dense-ivfpq": ("dense", "ivfpq"),
    "colbert-plaid": ("colbert", "plaid"),
}
BLOCK = 1024  # documents generated per random block (document i is the same whatever the batch it is read in)
MODEL_ID = "synthetic/random-unit-vectors"
DEFAULTS: dict[str, Any] = {
    "sizes": [1000, 10_000, 100_000],
    "plaid_sizes": [1000, 3000, 10_000],
    "stream_sizes": [10_000, 100_000],
    "dim": 384,
    "colbert_dim": 128,
    "tokens": [32, 64],
    "queries": 200,
    "plaid_queries": 50,
    "stream_dim": 64,
    "params": {},
}
SMOKE: dict[str, Any] = {
    "sizes": [200],
    "plaid_sizes": [120],
    "stream_sizes": [300, 600],
    "dim": 32,
    "colbert_dim": 16,
    "tokens": [8, 16],
    "queries": 8,
    "plaid_queries": 8,
    "stream_dim": 16,
    "params": {"dense-ivfpq": {"min_train_points": 100, "nlist": 4, "pq_m": 4, "pq_nbits": 4}},
}
_STREAMS = {"text": 0, "dense": 1, "colbert": 2, "query": 3}


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Synthetic:
    """Deterministic synthetic corpus: document i (id `d{i}`) has the same text and vectors however it is read."""

    dim: int = 384
    colbert_dim: int = 128
    tokens: tuple[int, int] = (32, 64)  # ColBERT tokens per document, inclusive range
    seed: int = 0
    vocabulary: int = 2000
    generation_s: float = 0.0  # time spent generating data (excluded from the measured times)
    _vocab: list[str] = field(default_factory=list, init=False, repr=False)

    def _rng(self, stream: str, block: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _STREAMS[stream], block])

    def _words(self) -> list[str]:
        rng = np.random.default_rng([self.seed, 99])
        syll = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        return [rng.choice(syll) + rng.choice(syll) + ("" if i % 3 else rng.choice(syll)) for i in range(self.vocabulary)]

    def _block(self, family: str, b: int) -> list[Any]:
        if family == "text":
            words, rng = self._vocab, self._rng("text", b)
            lengths = rng.integers(6, 15, BLOCK)
            picks = rng.integers(0, len(words), int(lengths.sum()))
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            return [" ".join(words[w] for w in picks[s:e]).capitalize() + "." for s, e in zip(bounds[:-1], bounds[1:])]
        rng = self._rng(family, b)
        if family == "dense":
            v = rng.standard_normal((BLOCK, self.dim), dtype=np.float32)
            return list(v / np.linalg.norm(v, axis=1, keepdims=True))
        lengths = rng.integers(self.tokens[0], self.tokens[1] + 1, BLOCK)
        v = rng.standard_normal((int(lengths.sum()), self.colbert_dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return np.split(v, np.cumsum(lengths)[:-1])

    def rows(self, family: str, start: int, n: int) -> Iterator[Any]:
        """Items start..start+n-1 of "text" / "dense" / "colbert", generated block by block (lazily)."""
        if family == "text" and not self._vocab:
            self._vocab = self._words()
        i = start
        while i < start + n:
            t = time.perf_counter()
            block = self._block(family, i // BLOCK)
            self.generation_s += time.perf_counter() - t
            take = block[i % BLOCK : i % BLOCK + min(BLOCK - i % BLOCK, start + n - i)]
            del block
            yield from take
            i += len(take)

    def docs(self, start: int, n: int) -> Iterator[dict[str, str]]:
        return ({"id": f"d{i}", "text": t} for i, t in zip(range(start, start + n), self.rows("text", start, n)))

    def queries(self, family: str, n_docs: int, n: int, noise: float = 0.5) -> tuple[list[str], Any]:
        """`n` queries: (source document ids, vectors) from random documents among the first `n_docs`."""
        rng = self._rng("query", n_docs)
        targets = sorted(int(i) for i in rng.choice(n_docs, size=min(n, n_docs), replace=False))
        out: list[np.ndarray] = []
        cached: tuple[int, list[Any]] = (-1, [])
        for i in targets:  # sorted: each block is generated once
            if cached[0] != i // BLOCK:
                t = time.perf_counter()
                cached = (i // BLOCK, self._block(family, i // BLOCK))
                self.generation_s += time.perf_counter() - t
            v = cached[1][i % BLOCK]
            v = v[:32] if family == "colbert" else v
            v = v + noise * rng.standard_normal(v.shape).astype(np.float32) / np.sqrt(v.shape[-1])
            out.append(v / np.linalg.norm(v, axis=-1, keepdims=True))
        return [f"d{i}" for i in targets], (np.stack(out) if family == "dense" else out)


# ------------------------------------------------------------------------------------------ measuring
@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    inode: int


@dataclass
class WriteDiff:
    """What a write did to a folder's files (see the module docstring)."""

    new_bytes: int = 0
    replaced_bytes: int = 0
    in_place_bytes: int = 0
    removed_bytes: int = 0
    files: list[str] = field(default_factory=list)  # "+name" new, "~name" replaced, "*name" in place, "-name" removed

    @property
    def written_bytes(self) -> int:
        return self.new_bytes + self.replaced_bytes + self.in_place_bytes


def snapshot(folder: Path) -> dict[str, FileState]:
    """Size, mtime and inode of every file under `folder` (relative POSIX paths)."""
    out = {}
    for f in folder.rglob("*"):
        try:
            st = f.stat()
        except FileNotFoundError:  # removed while walking
            continue
        if f.is_file():
            out[f.relative_to(folder).as_posix()] = FileState(st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def diff_folders(before: dict[str, FileState], after: dict[str, FileState]) -> WriteDiff:
    d = WriteDiff()
    for name, new in sorted(after.items()):
        old = before.get(name)
        if old is None:
            d.new_bytes += new.size
            d.files.append(f"+{name}")
        elif old.inode != new.inode:
            d.replaced_bytes += new.size
            d.files.append(f"~{name}")
        elif (old.size, old.mtime_ns) != (new.size, new.mtime_ns):
            d.in_place_bytes += new.size
            d.files.append(f"*{name}")
    for name in sorted(set(before) - set(after)):
        d.removed_bytes += before[name].size
        d.files.append(f"-{name}")
    return d


def io_counters() -> dict[str, int] | None:
    """This process's /proc/self/io counters (Linux), None where unavailable."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return None
    return {k.strip(): int(v) for k, v in (line.split(":") for line in text.splitlines() if ":" in line)}


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def current_rss() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def folder_bytes(folder: Path) -> int:
    return sum(s.size for s in snapshot(folder).values())


def hit_ids(hits: Iterable[Any]) -> list[str]:
    """Document ids of one query's results (result objects with `id` or `doc_id`, or dicts)."""
    out = []
    for h in hits:
        h_id = h.get("id", h.get("doc_id")) if isinstance(h, dict) else getattr(h, "id", None) or getattr(h, "doc_id", None)
        out.append(str(h_id))
    return out


def self_found(results: list[Any], targets: list[str]) -> int:
    return sum(t in hit_ids(hs) for hs, t in zip(results, targets))


# ------------------------------------------------------------------------------------------ workers
def _setup_threads(threads: int | None) -> None:
    if threads:
        import faiss

        faiss.omp_set_num_threads(threads)
        try:
            import torch  # PLAID searches with torch

            torch.set_num_threads(threads)
        except ImportError:
            pass


def run_kind(spec: dict[str, Any]) -> dict[str, Any]:
    """One kind at one size (a worker process): build, open, search, add, with times, bytes and memory."""
    from mbert_retrieval.index import Index

    from .bench_index import timed_search

    kind, n, path = spec["kind"], int(spec["n"]), Path(spec["path"])
    family, index_type = KINDS[kind]
    data = Synthetic(**spec["data"])
    dim = data.dim if family == "dense" else data.colbert_dim
    shutil.rmtree(path, ignore_errors=True)
    row: dict[str, Any] = {"kind": kind, "n_docs": n, "dim": dim, "params": spec.get("params", {}), "rss_start": current_rss()}
    t = time.perf_counter()
    index = Index.create(path, family, index_type, model_id=MODEL_ID, dim=dim, **spec.get("params", {}))
    index.add(data.docs(0, n), vectors=data.rows(family, 0, n))
    index.finalize()
    index.close()
    row["build_s"] = time.perf_counter() - t - data.generation_s
    row["peak_rss_build"] = peak_rss()
    row["index_bytes"] = folder_bytes(path)

    t = time.perf_counter()
    index = Index.open(path, verify=False)
    row["open_s"] = time.perf_counter() - t
    info = index.info()
    row["n_vectors"] = info.get("n_vectors")
    structure = info.get("structure")
    structure = structure if isinstance(structure, dict) else {}
    row["effective_index_type"] = structure.get("effective_index_type", index_type)
    targets, queries = data.queries(family, n, spec["queries"])
    results, row["qps"] = timed_search(lambda q: index.search(q, k=spec["k"]), queries)
    row["n_queries"], row["self_at_k"] = len(targets), self_found(results, targets) / max(1, len(targets))
    row["peak_rss_search"] = peak_rss()

    n_add = spec["n_add"]
    added = list(data.docs(n, n_add)), list(data.rows(family, n, n_add))
    before, io0 = snapshot(path), io_counters()
    t = time.perf_counter()
    index.add(added[0], vectors=added[1])
    row["add_s"] = time.perf_counter() - t
    io1, after = io_counters(), snapshot(path)
    d = diff_folders(before, after)
    row.update(
        add_docs=n_add,
        add_written_bytes=d.written_bytes,
        add_new_bytes=d.new_bytes,
        add_replaced_bytes=d.replaced_bytes,
        add_in_place_bytes=d.in_place_bytes,
        add_removed_bytes=d.removed_bytes,
        add_files=d.files,
        add_rewrite_fraction=d.written_bytes / max(1, row["index_bytes"]),
        add_io_wchar=None if io0 is None or io1 is None else io1["wchar"] - io0["wchar"],
        add_io_write_bytes=None if io0 is None or io1 is None else io1["write_bytes"] - io0["write_bytes"],
        index_bytes_after_add=sum(s.size for s in after.values()),
    )
    probes = np.stack(added[1]) if family == "dense" else [m[:32] for m in added[1]]
    row["add_found"] = self_found(index.search(probes, k=spec["k"]), [a["id"] for a in added[0]])
    row["peak_rss_add"] = peak_rss()
    index.close()
    row.update(generation_s=data.generation_s, cpu_s=cpu_seconds())
    return row


def run_stream(spec: dict[str, Any]) -> dict[str, Any]:
    """Streaming ingest (a worker process): `Index.add` from generators of N documents, then finalize."""
    from mbert_retrieval.index import Index

    kind, n, path = spec["kind"], int(spec["n"]), Path(spec["path"])
    family, index_type = KINDS[kind]
    data = Synthetic(**spec["data"])
    dim = data.dim if family == "dense" else data.colbert_dim
    shutil.rmtree(path, ignore_errors=True)
    index = Index.create(path, family, index_type, model_id=MODEL_ID, dim=dim, **spec.get("params", {}))
    row: dict[str, Any] = {"kind": kind, "n_docs": n, "dim": dim, "rss_start": current_rss(), "peak_rss_start": peak_rss()}
    t = time.perf_counter()
    added = index.add(data.docs(0, n), vectors=data.rows(family, 0, n))
    row["add_s"] = time.perf_counter() - t - data.generation_s
    row["peak_rss_add"], row["rss_after_add"] = peak_rss(), current_rss()
    gen = data.generation_s
    t = time.perf_counter()
    index.finalize()
    row["finalize_s"] = time.perf_counter() - t
    row["peak_rss_finalize"] = peak_rss()
    index.close()
    row.update(
        added=added,
        generation_s=gen,
        index_bytes=folder_bytes(path),
        cpu_s=cpu_seconds(),
        vector_bytes=n * dim * 4 if family == "dense" else None,
        docs_per_s=n / max(row["add_s"], 1e-9),
    )
    return row


# ------------------------------------------------------------------------------------------ driver
def run_worker(mode: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; a failure becomes a row with `error`."""
    out = Path(spec["path"]).with_suffix(".result.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "mbert_retrieval.eval.bench_scale", "--worker", mode, json.dumps(spec), str(out)]
    base = {"kind": spec["kind"], "n_docs": spec["n"]}
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timed out after {timeout:.0f} s"}
    finally:
        if not spec.get("keep"):
            shutil.rmtree(spec["path"], ignore_errors=True)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {**base, "error": f"worker exit {proc.returncode}: " + " | ".join(tail)[-400:]}
    row = json.loads(out.read_text())
    out.unlink()
    row["wall_s"] = time.perf_counter() - started  # the whole worker: interpreter start, imports, data, all phases
    return row


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    from ._params import parse_kind_params

    return parse_kind_params(items, KINDS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mbert_retrieval.eval.bench_scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--sizes", nargs="+", type=int, help="dense index sizes (documents; default 1000 10000 100000)")
    p.add_argument("--plaid-sizes", nargs="+", type=int, help="PLAID index sizes (default 1000 3000 10000)")
    p.add_argument("--stream-sizes", nargs="*", type=int, help="streaming-ingest sizes (default 10000 100000; none: skip)")
    p.add_argument("--stream-1m", action="store_true", help="add a 1,000,000-document streaming-ingest run")
    p.add_argument("--stream-kinds", nargs="+", default=["dense-flat"], choices=list(KINDS))
    p.add_argument("--stream-dim", type=int, help="vector size of the streaming-ingest runs, a tiny model's (default 64)")
    p.add_argument("--dim", type=int, help="dense vector size (default 384)")
    p.add_argument("--colbert-dim", type=int, help="ColBERT token vector size (default 128)")
    p.add_argument("--tokens", nargs=2, type=int, metavar=("MIN", "MAX"), help="tokens per ColBERT document (default 32 64)")
    p.add_argument("--queries", type=int, help="queries per search batch (default 200)")
    p.add_argument("--plaid-queries", type=int, help="queries per PLAID search batch (default 50)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--add", type=int, default=20, help="documents added to the ready index")
    p.add_argument("--param", action="append", default=[], metavar="KIND.NAME=VALUE", help="index setting, e.g. dense-hnsw.hnsw_m=16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="FAISS / torch threads in the workers (default: theirs)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    p.add_argument("--workdir", default="runs/bench_scale", help="index folders (removed after each run)")
    p.add_argument("--keep-indexes", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and dimensions (for what is not given): checks that it all runs")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables instead of plain text")
    p.add_argument("--markdown-from", metavar="JSON", help="only print the Markdown tables of a saved --json file")
    p.add_argument("--worker", nargs=3, metavar=("MODE", "SPEC", "OUT"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ._atomic import atomic_write_json

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.worker:
        mode, spec, out = args.worker
        spec = json.loads(spec)
        _setup_threads(spec.get("threads"))
        row = (run_kind if mode == "kind" else run_stream)(spec)
        atomic_write_json(out, row)
        return row
    if args.markdown_from:
        saved = json.loads(Path(args.markdown_from).read_text(encoding="utf-8"))
        print(to_markdown(saved))
        return saved
    preset = SMOKE if args.smoke else DEFAULTS  # for what the command line leaves unset
    for key in preset.keys() - {"params"}:
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    given = parse_params(args.param)
    params = {k: {**preset["params"].get(k, {}), **given.get(k, {})} for k in {*preset["params"], *given}}
    stream_sizes = list(args.stream_sizes) + ([1_000_000] if args.stream_1m else [])
    data = {"dim": args.dim, "colbert_dim": args.colbert_dim, "tokens": list(args.tokens), "seed": args.seed}
    workdir = Path(args.workdir)
    result: dict[str, Any] = {
        "command": "python -m mbert_retrieval.eval.bench_scale " + shlex.join(argv),
        "engine": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {
            **data,
            "queries": args.queries,
            "plaid_queries": args.plaid_queries,
            "k": args.k,
            "add": args.add,
            "stream_dim": args.stream_dim,
            "params": params,
            "threads": args.threads,
        },
        "rows": [],
        "stream": [],
    }
    common = {"k": args.k, "n_add": args.add, "threads": args.threads, "keep": args.keep_indexes}
    started = time.perf_counter()
    for kind in args.kinds:
        for n in args.plaid_sizes if KINDS[kind][0] == "colbert" else args.sizes:
            print(f"[bench_scale] {kind} N={n:,} ...", file=sys.stderr, flush=True)
            queries = args.plaid_queries if KINDS[kind][0] == "colbert" else args.queries
            spec = {
                **common,
                "kind": kind,
                "n": n,
                "path": str(workdir / f"{kind}-{n}"),
                "data": data,
                "params": params.get(kind, {}),
                "queries": queries,
            }
            result["rows"].append(run_worker("kind", spec, args.timeout))
    for kind in args.stream_kinds:
        for n in stream_sizes:
            print(f"[bench_scale] streaming ingest {kind} N={n:,} ...", file=sys.stderr, flush=True)
            sdata = {**data, "dim": args.stream_dim} if KINDS[kind][0] == "dense" else data
            spec = {**common, "kind": kind, "n": n, "path": str(workdir / f"stream-{kind}-{n}"), "data": sdata, "params": params.get(kind, {})}
            result["stream"].append(run_worker("stream", spec, args.timeout))
    result["total_s"] = time.perf_counter() - started
    if args.json:
        atomic_write_json(args.json, result)
    if args.markdown:
        print(to_markdown(result))
    else:
        print_report(result)
    return result


if __name__ == "__main__":
    main()
