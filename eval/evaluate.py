"""Evaluate a retrieval model on one or more datasets: encode (with a resumable on-disk corpus cache),
search exactly (dense dot product, or ColBERT MaxSim via `mbert_retrieval.maxsim`) or through a plugged-in
`search_fn`, score with pytrec_eval, write results JSON (MTEB shape), TREC run and per-query scores.

The model is duck-typed: `.kind` ("dense" | "colbert"), `.model_id`, optional `.revision` and `.cache_key`,
`.encode_queries(texts, show_progress=False)` and `.encode_documents(texts, show_progress=False)`
(dense: (n, d) array, normalised; colbert: list of (n_i, d) arrays).

Exact search is deterministic: ties are broken like trec_eval (doc id descending), also at the top-k cut.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from mbert_retrieval.data import document_text
from mbert_retrieval.maxsim import maxsim, pad_token_vectors

from ._atomic import atomic_write_json
from .datasets import ResolvedDataset, corpus_fingerprint, resolve_dataset, task_revision
from .metrics import DEFAULT_K_VALUES, EvalResult, evaluate_run, ranked, save_trec_run
from .results import (MAIN_METRICS, average_scores, model_identity, model_meta, mteb_result, print_results_table,
                      results_table, write_mteb_layout)

logger = logging.getLogger(__name__)

__all__ = ["EvalConfig", "DatasetReport", "EvaluationReport", "EmbeddingCache", "evaluate_model", "retriever_search_factory",
           "encode_corpus", "exact_search", "SearchFn", "check_options", "OPTION_FIELDS"]

SearchFn = Callable[[dict[str, str], int], Mapping[str, Mapping[str, float]]]
CACHE_FORMAT = 1


@dataclass
class EvalConfig:
    """Options of `evaluate_model` (all but the model, datasets and search hooks)."""

    split: str = "test"
    k: int = 100  # retrieval depth; metrics are reported for k_values <= k
    index_type: str = "exact"
    k_values: tuple[int, ...] = DEFAULT_K_VALUES
    mrr_k_values: tuple[int, ...] = (10,)
    cache_dir: str | os.PathLike | None = None  # embeddings cached under <cache_dir>/embeddings when set
    output_dir: str | os.PathLike | None = None
    show_progress: bool = True
    ignore_identical_ids: bool = True  # as BEIR/MTEB: a document whose id equals the query id is skipped
    cache_chunk_size: int = 2048  # documents per encode call / cache file
    query_batch_size: int = 256  # dense: queries scored together
    doc_chunk_size: int = 65536  # dense: documents scored together
    colbert_query_batch_size: int = 16
    colbert_doc_chunk_size: int = 256
    device: str = "cpu"
    run_tag: str | None = None  # TREC run tag; default derived from the model name
    dataset_revision: str | None = None  # override of the pinned hub revision
    print_table: bool | None = None  # None: when show_progress
    model_name: str | None = None  # the model's name in results files; default: its hub id (see model_identity)
    model_revision: str | None = None  # its revision there; default: the model's (or its hub snapshot's) revision


# EvalConfig fields that are `evaluate_model` parameters of their own (not passed as **options)
_OWN_PARAMETERS = ("split", "k", "index_type", "cache_dir", "output_dir", "show_progress")
# The options `evaluate_model(**options)` (and `mbret eval --option`) take
OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EvalConfig) if f.name not in _OWN_PARAMETERS)
_CUTOFF_FIELDS = ("k_values", "mrr_k_values")


def check_options(options: Mapping[str, Any], allowed: Sequence[str] = OPTION_FIELDS) -> dict[str, Any]:
    """Check `EvalConfig` options by name (unknown ones: the valid names and a close-match hint) and type
    (integers >= 1, booleans, strings; cut-off lists as non-empty lists of integers >= 1) and return them
    normalised (cut-off lists as tuples). Raises `SettingError`, a ValueError (and TypeError) whose message
    starts with the option's name."""
    from mbert_retrieval.index.structures import SettingError, check_settings

    allowed = tuple(allowed)
    cutoffs = {n: v for n, v in options.items() if n in _CUTOFF_FIELDS and n in allowed}
    check_settings(EvalConfig, {n: v for n, v in options.items() if n not in cutoffs}, allowed)
    out = dict(options)
    for name, value in cutoffs.items():
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value or any(
                isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in value):
            raise SettingError(name, f"expected a non-empty list of integers >= 1, got {value!r}")
        out[name] = tuple(int(v) for v in value)
    return out


@dataclass
class DatasetReport:
    """Outcome on one dataset."""

    name: str
    task_name: str
    split: str
    result: EvalResult
    run: dict[str, dict[str, float]]
    evaluation_time: float
    files: dict[str, Path] = field(default_factory=dict)
    dataset_revision: str | None = None


@dataclass
class EvaluationReport:
    """Outcome on every dataset, with the unweighted average of the aggregate scores."""

    model_name: str
    model_revision: str | None
    datasets: dict[str, DatasetReport]
    average: dict[str, float]
    files: dict[str, Path] = field(default_factory=dict)

    def table(self, metrics: Sequence[str] = MAIN_METRICS):
        return results_table({n: r.result for n, r in self.datasets.items()}, metrics, title=self.model_name)


# ---------------------------------------------------------------------------------------- embedding cache
def _model_stamp(model_id: str) -> str | None:
    """For a local model folder: names, sizes and mtimes of its files (a re-saved model changes the key)."""
    p = Path(model_id)
    if not p.is_dir():
        return None
    items = sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns)
                   for f in p.rglob("*") if f.is_file())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


class EmbeddingCache:
    """Corpus embeddings on disk, one safetensors file per chunk of documents (written atomically), keyed by
    (model id, revision, model cache key, kind, corpus fingerprint). An interrupted run resumes from the
    chunks already written. Dense chunks hold `embeddings` (n, d); ColBERT chunks hold the token vectors of
    all documents concatenated, `vectors` (sum n_i, d), and `lengths` (n,)."""

    def __init__(self, root: str | os.PathLike, model: Any, fingerprint: str, n_docs: int, chunk_size: int):
        self.key = {
            "format": CACHE_FORMAT, "model_id": str(model.model_id), "revision": getattr(model, "revision", None),
            "model_cache_key": _jsonable(getattr(model, "cache_key", None)),
            "model_stamp": _model_stamp(str(model.model_id)), "kind": model.kind, "corpus_fingerprint": fingerprint, "n_docs": n_docs,
        }
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:24]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(model.model_id))[-60:].strip("_")
        self.dir = Path(root) / "embeddings" / f"{safe or 'model'}-{model.kind}-{digest}"
        manifest = self.dir / "manifest.json"
        self.chunk_size = chunk_size
        if manifest.is_file():
            try:
                stored = json.loads(manifest.read_text())
                if stored.get("key") == self.key:
                    self.chunk_size = int(stored["chunk_size"])  # resume with the chunking already on disk
                else:
                    logger.warning("embedding cache %s has another key; rewriting it", self.dir)
                    for f in self.dir.glob("chunk-*.safetensors"):
                        f.unlink()
                    atomic_write_json(manifest, {"key": self.key, "chunk_size": chunk_size})
            except (ValueError, KeyError, TypeError):
                atomic_write_json(manifest, {"key": self.key, "chunk_size": chunk_size})
        else:
            atomic_write_json(manifest, {"key": self.key, "chunk_size": chunk_size})

    def _path(self, i: int) -> Path:
        return self.dir / f"chunk-{i:06d}.safetensors"

    def load(self, i: int, expected: int) -> np.ndarray | list[np.ndarray] | None:
        path = self._path(i)
        if not path.is_file():
            return None
        try:
            t = load_file(str(path))
            if self.key["kind"] == "dense":
                emb = t["embeddings"]
                return emb if emb.shape[0] == expected else None
            lengths = t["lengths"].astype(np.int64)
            if lengths.shape[0] != expected or int(lengths.sum()) != t["vectors"].shape[0]:
                return None
            return np.split(t["vectors"], np.cumsum(lengths)[:-1]) if expected else []
        except Exception as e:  # unreadable chunk: encode it again
            logger.warning("ignoring unreadable cache chunk %s (%s)", path, e)
            return None

    def save(self, i: int, emb: np.ndarray | list[np.ndarray]) -> None:
        if self.key["kind"] == "dense":
            tensors = {"embeddings": np.ascontiguousarray(emb)}
        else:
            dim = emb[0].shape[1] if emb else 0
            vectors = np.concatenate(emb, axis=0) if emb else np.zeros((0, dim), np.float32)
            tensors = {"vectors": np.ascontiguousarray(vectors),
                       "lengths": np.asarray([e.shape[0] for e in emb], dtype=np.int64)}
        tmp = self.dir / f".{self._path(i).name}.{os.getpid()}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, self._path(i))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


# ---------------------------------------------------------------------------------------------- encoding
def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if x.dtype == torch.bfloat16 else x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype in (np.float16, np.float32) else x.astype(np.float32)


def _check(emb: Any, kind: str, n: int, what: str) -> np.ndarray | list[np.ndarray]:
    if kind == "dense":
        arr = _as_numpy(emb)
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"{what}: expected a ({n}, d) array, got shape {arr.shape}")
        return arr
    if kind == "colbert":
        mats = [_as_numpy(e) for e in emb]
        if len(mats) != n or any(m.ndim != 2 for m in mats):
            raise ValueError(f"{what}: expected {n} token matrices of shape (n_i, d)")
        return mats
    raise ValueError(f"model.kind must be 'dense' or 'colbert', got {kind!r}")


def encode_corpus(model: Any, texts: Sequence[str], cache: EmbeddingCache | None = None, chunk_size: int = 2048,
                  show_progress: bool = False, desc: str = "encode corpus") -> np.ndarray | list[np.ndarray]:
    """Encode documents chunk by chunk, reusing (and filling) the cache."""
    cs = cache.chunk_size if cache is not None else chunk_size
    parts: list = []
    bar = tqdm(total=len(texts), desc=desc, unit="doc", disable=not show_progress)
    n_cached = 0
    for i in range(math.ceil(len(texts) / cs)):
        batch = texts[i * cs:(i + 1) * cs]
        emb = cache.load(i, len(batch)) if cache is not None else None
        if emb is None:
            emb = _check(model.encode_documents(list(batch), show_progress=False), model.kind, len(batch),
                         "encode_documents")
            if cache is not None:
                cache.save(i, emb)
        else:
            n_cached += len(batch)
        parts.append(emb)
        bar.update(len(batch))
    bar.close()
    if n_cached:
        logger.info("%s: %d of %d documents from the cache", desc, n_cached, len(texts))
    if model.kind == "dense":
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.float32)
    return [m for p in parts for m in p]


# ------------------------------------------------------------------------------------------------ search
def _topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k per row, ordered by (score desc, column asc), exact also when ties straddle the cut."""
    k = min(k, scores.shape[1])
    if torch.isnan(scores).any():
        raise ValueError("NaN scores: check the embeddings")
    vals, idx = torch.topk(scores, k, dim=1)
    straddle = ((scores >= vals[:, -1:]).sum(dim=1) > k).nonzero().flatten().tolist()
    for r in straddle:
        v, i = torch.sort(scores[r], descending=True, stable=True)
        vals[r], idx[r] = v[:k], i[:k]
    order = torch.argsort(idx, dim=1)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return vals.gather(1, order), idx.gather(1, order)


def _merge(best: tuple[torch.Tensor, torch.Tensor] | None, new: tuple[torch.Tensor, torch.Tensor], k: int):
    """Merge running top-k with a later chunk's top-k (later chunks hold larger column indices)."""
    if best is None:
        return new
    vals, idx = torch.cat([best[0], new[0]], dim=1), torch.cat([best[1], new[1]], dim=1)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :k]
    return vals.gather(1, order), idx.gather(1, order)


@torch.no_grad()
def exact_search(kind: str, queries: Any, documents: Any, k: int, config: EvalConfig | None = None,
                 show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of every query over all documents: (scores (Q, k'), document positions (Q, k')), rows
    ordered best first, ties broken by the smaller position. Dense: dot product; ColBERT: MaxSim."""
    cfg = config or EvalConfig()
    dev = torch.device(cfg.device)
    n_docs = documents.shape[0] if kind == "dense" else len(documents)
    n_q = queries.shape[0] if kind == "dense" else len(queries)
    if n_docs == 0 or n_q == 0:
        return np.zeros((n_q, 0), np.float32), np.zeros((n_q, 0), np.int64)
    if kind == "dense":
        docs = torch.from_numpy(np.ascontiguousarray(documents)).to(dev, torch.float32)
        q_all = torch.from_numpy(np.ascontiguousarray(queries)).to(dev, torch.float32)
        if q_all.shape[1] != docs.shape[1]:
            raise ValueError(f"query dim {q_all.shape[1]} != document dim {docs.shape[1]}")
        out_v, out_i = [], []
        for qs in tqdm(range(0, n_q, cfg.query_batch_size), desc="search", disable=not show_progress):
            q = q_all[qs:qs + cfg.query_batch_size]
            best: tuple[torch.Tensor, torch.Tensor] | None = None
            for ds in range(0, n_docs, cfg.doc_chunk_size):
                v, i = _topk(q @ docs[ds:ds + cfg.doc_chunk_size].T, k)
                best = _merge(best, (v, i + ds), k)
            assert best is not None  # n_docs > 0
            out_v.append(best[0])
            out_i.append(best[1])
        return torch.cat(out_v).cpu().numpy(), torch.cat(out_i).cpu().numpy()
    # ColBERT: each document chunk is padded once and scored against every query batch
    qb = cfg.colbert_query_batch_size
    q_batches = [pad_token_vectors(queries[s:s + qb], device=dev, dtype=torch.float32) for s in range(0, n_q, qb)]
    bests: list = [None] * len(q_batches)
    step = cfg.colbert_doc_chunk_size
    for ds in tqdm(range(0, n_docs, step), desc="maxsim", disable=not show_progress):
        d, dmask = pad_token_vectors(documents[ds:ds + step], device=dev, dtype=torch.float32)
        for b, (q, qmask) in enumerate(q_batches):
            v, i = _topk(maxsim(q, d, qmask, dmask, doc_chunk_size=step), k)
            bests[b] = _merge(bests[b], (v, i + ds), k)
    return (torch.cat([b[0] for b in bests]).cpu().numpy(), torch.cat([b[1] for b in bests]).cpu().numpy())


# -------------------------------------------------------------------------------------------- evaluation
def _exact_run(model: Any, ds: ResolvedDataset, depth: int, cfg: EvalConfig) -> dict[str, dict[str, float]]:
    corpus = ds.data.corpus
    doc_ids = list(corpus)
    texts = [document_text(d) for d in corpus.values()]
    cache = None
    if cfg.cache_dir is not None:
        cache = EmbeddingCache(cfg.cache_dir, model, corpus_fingerprint(doc_ids, texts), len(texts),
                               cfg.cache_chunk_size)
    docs = encode_corpus(model, texts, cache, cfg.cache_chunk_size, cfg.show_progress, f"encode {ds.name}")
    qids = list(ds.data.queries)
    q_emb = _check(model.encode_queries([ds.data.queries[q] for q in qids], show_progress=cfg.show_progress),
                   model.kind, len(qids), "encode_queries")
    # documents in doc-id-descending order, so "smaller position first" == trec_eval's tie order
    perm = sorted(range(len(doc_ids)), key=doc_ids.__getitem__, reverse=True)
    docs = docs[np.asarray(perm, dtype=np.int64)] if model.kind == "dense" else [docs[i] for i in perm]
    ordered = [doc_ids[i] for i in perm]
    vals, idx = exact_search(model.kind, q_emb, docs, depth, cfg, cfg.show_progress)
    return {qid: {ordered[j]: float(v) for v, j in zip(vals[r], idx[r])} for r, qid in enumerate(qids)}


def _unique_name(name: str, taken: Mapping[str, Any]) -> str:
    out, n = name, 2
    while out in taken:
        out, n = f"{name}-{n}", n + 1
    return out


def retriever_search_factory(retriever: Any) -> Callable[[Any, ResolvedDataset], SearchFn]:
    """`search_factory` over an open `Retriever` (any index kind, sharded too): for each dataset it checks that
    the index holds that dataset's corpus (document count and a sample of ids), then searches the index."""

    def factory(_model: Any, ds: ResolvedDataset) -> SearchFn:
        corpus = list(ds.data.corpus)
        sample = corpus[:: max(1, len(corpus) // 50)]
        found = sum(doc is not None for doc in retriever.index.get(sample))
        if len(retriever) != len(corpus) or found != len(sample):
            raise ValueError(f"the index at {retriever.path} holds {len(retriever)} documents ({found} of "
                             f"{len(sample)} sampled ids of {ds.name}), not the {len(corpus)} of {ds.name}: build "
                             f"an index of that corpus (mbret index {ds.location or ds.name} DIR)")

        def search(queries: dict[str, str], depth: int) -> dict[str, dict[str, float]]:
            ids = list(queries)
            hits = retriever.search([queries[q] for q in ids], k=depth)
            return {q: {r.id: r.score for r in row} for q, row in zip(ids, hits)}

        return search

    return factory


def evaluate_model(
    model: Any,
    datasets: Sequence[str | os.PathLike | ResolvedDataset] | str | os.PathLike | ResolvedDataset,
    split: str = "test",
    k: int = 100,
    index_type: str = "exact",
    cache_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    search_fn: SearchFn | None = None,
    search_factory: Callable[[Any, ResolvedDataset], SearchFn] | None = None,
    index: Any = None,
    **options: Any,
) -> EvaluationReport:
    """Evaluate `model` on each dataset spec (see `resolve_dataset`) and return scores, runs and files.

    Search: exact (`index_type="exact"`), or `search_fn(queries, k) -> run` (used for every dataset), or
    `search_factory(model, dataset) -> search_fn` (built per dataset, e.g. an ANN index over its corpus), or
    `index`: an index folder or open `Retriever` of the dataset's corpus (its model is used when `model` is None).
    `cache_dir`: corpus embeddings cached (and resumed) under `<cache_dir>/embeddings`, BEIR/hub downloads under
    it too; None: no embedding cache, downloads in `default_cache_dir()`. `output_dir`: per dataset
    `<name>/results.json` (MTEB shape), `<name>/run.trec`, `<name>/per_query.json`; plus `summary.json` and
    `mteb/<model>/<revision>/<TaskName>.json` + `model_meta.json` (the layout MTEB's results repository reads).
    Extra keyword `options` are `EvalConfig` fields (`OPTION_FIELDS`), checked by `check_options`: an unknown
    name or a wrong type is a ValueError naming the option."""
    if index is not None:
        if search_fn is not None or search_factory is not None:
            raise ValueError("give one of index, search_fn or search_factory")
        if isinstance(index, (str, os.PathLike)):
            from mbert_retrieval.retriever import Retriever

            with Retriever.open(index, model=model) as retriever:
                return evaluate_model(model, datasets, split, k, index_type, cache_dir, output_dir, show_progress,
                                      index=retriever, **options)
        model = index.model if model is None else model
        search_factory = retriever_search_factory(index)
        index_type = "index" if index_type == "exact" else index_type
    cfg = EvalConfig(split=split, k=k, index_type=index_type, cache_dir=cache_dir, output_dir=output_dir,
                     show_progress=show_progress, **check_options(options))
    if cfg.k < 1:
        raise ValueError("k must be >= 1")
    if cfg.index_type != "exact" and search_fn is None and search_factory is None:
        raise ValueError(f"index_type {cfg.index_type!r} needs a search_fn or search_factory (an index from "
                         "mbert_retrieval.index wrapped as search_fn(queries, k) -> run); only 'exact' is built in")
    if search_fn is None and search_factory is None and getattr(model, "kind", None) not in ("dense", "colbert"):
        raise ValueError(f"model.kind must be 'dense' or 'colbert', got {getattr(model, 'kind', None)!r}")
    specs: list[Any] = list(datasets) if isinstance(datasets, (list, tuple)) else [datasets]
    k_values = tuple(v for v in cfg.k_values if v <= cfg.k) or (cfg.k,)
    main_score = "ndcg_at_10" if 10 in k_values else f"ndcg_at_{max(k_values)}"
    identity = model_identity(model, cfg.model_name, cfg.model_revision)  # a hub id, never a local path
    model_name, model_rev = identity.name, identity.revision
    if identity.note and cfg.output_dir is not None:
        logger.warning("%s", identity.note)
    tag = cfg.run_tag or "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)[-64:] or "run"
    out_root = Path(cfg.output_dir) if cfg.output_dir is not None else None
    reports: dict[str, DatasetReport] = {}
    report = EvaluationReport(model_name, model_rev, reports, {})
    mteb_results: dict[str, dict[str, Any]] = {}

    for spec in specs:
        start = time.perf_counter()
        ds = resolve_dataset(spec, cfg.split, cfg.cache_dir, cfg.dataset_revision)
        name = _unique_name(ds.name, reports)
        queries = ds.data.queries
        skip_self = cfg.ignore_identical_ids and any(q in ds.data.corpus for q in queries)
        depth = cfg.k + 1 if skip_self else cfg.k
        fn = search_fn if search_fn is not None else search_factory(model, ds) if search_factory is not None else None
        if fn is not None:
            # canonical (trec_eval) order and at most `depth` documents, whatever the hook returned
            run = {str(q): dict(ranked(docs)[:depth]) for q, docs in fn(dict(queries), depth).items()}
        else:
            run = _exact_run(model, ds, depth, cfg)
        if skip_self:
            run = {q: dict([(d, s) for d, s in docs.items() if d != q][: cfg.k]) for q, docs in run.items()}
        result = evaluate_run(ds.data.qrels, run, k_values, cfg.mrr_k_values, cfg.ignore_identical_ids)
        elapsed = time.perf_counter() - start
        # the hub revision loaded; for a BEIR set, MTEB's copy of it; else the content fingerprint
        revision = ds.revision or task_revision(ds.task_name) or ds.fingerprint
        dr = DatasetReport(name, ds.task_name, cfg.split, result, run, elapsed, dataset_revision=revision)
        if out_root is not None:
            folder = out_root / name
            res = mteb_result(result, ds.task_name, cfg.split, revision, ds.languages, ds.hf_subset, elapsed,
                              model_name, model_rev, main_score=main_score, extra={
                                  "dataset": {"name": name, "source": ds.source, "location": ds.location,
                                              "fingerprint": ds.fingerprint, "num_queries": result.num_queries,
                                              "num_documents": len(ds.data.corpus)},
                                  "search": {"index_type": cfg.index_type if search_fn is None and search_factory
                                             is None else f"{cfg.index_type}(custom)", "k": cfg.k,
                                             "ignore_identical_ids": cfg.ignore_identical_ids},
                                  "beir": result.beir()})
            dr.files = {"results": atomic_write_json(folder / "results.json", res),
                        "run": save_trec_run(run, folder / "run.trec", tag),
                        "per_query": atomic_write_json(folder / "per_query.json", result.per_query)}
            mteb_results[ds.task_name if ds.task_name not in mteb_results else name] = res
            report.files["mteb"] = write_mteb_layout(out_root / "mteb", mteb_results,
                                                     model_meta(model, model_name, model_rev, identity.adapted_from))
        reports[name] = dr
        report.average = average_scores([r.result for r in reports.values()])
        if out_root is not None:
            report.files["summary"] = atomic_write_json(out_root / "summary.json", _summary(report, cfg))
    if cfg.print_table if cfg.print_table is not None else cfg.show_progress:
        print_results_table({n: r.result for n, r in reports.items()}, title=model_name)
    return report


def _summary(report: EvaluationReport, cfg: EvalConfig) -> dict[str, Any]:
    avg = EvalResult(scores=report.average, per_query={}, k_values=()).beir() if report.average else {}
    return {
        "model_name": report.model_name, "model_revision": report.model_revision, "split": cfg.split,
        "index_type": cfg.index_type, "k": cfg.k,
        "datasets": {n: {"task_name": r.task_name, "dataset_revision": r.dataset_revision,
                         "evaluation_time": r.evaluation_time, "num_queries": r.result.num_queries,
                         **r.result.beir()} for n, r in report.datasets.items()},
        "average": avg,
    }
