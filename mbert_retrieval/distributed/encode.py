"""Encode a corpus into embedding shards: in one process, across torchrun ranks, or on a Ray cluster.

- `local` (default): one process, one model; no Ray or torch.distributed needed.
- `torchrun`: every rank runs the same call; rank r encodes the shards i with i % WORLD_SIZE == r (RANK and
  WORLD_SIZE are read from the environment; LOCAL_RANK picks the GPU). Shard folders must be on a filesystem
  every rank sees. When torch.distributed is initialised the ranks meet at a barrier at the end; otherwise a
  rank returns as soon as its own shards are written (`store.complete` tells whether all are).
- `ray`: Ray Data `from_items` over the documents of the pending shards, `map_batches` with an actor pool
  (one model replica per actor; `num_gpus=1` per actor when the cluster has GPUs, else CPU actors), batches
  streamed back to the driver in order, each shard written by the driver as soon as all its rows arrived
  (so the shard folder only needs to be on the driver's disk; driver memory holds about one shard).

Every backend skips shards already finished in `out_dir` (resume) and produces the same shards. With
`EncodeConfig.window` set, every backend splits long documents into windows with the `DocumentEncoder` a
one-process build uses, one row per window with its span.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from ..ragged import offsets_of
from .shards import ShardStore

Row = tuple[str, str, str | None, dict | None]  # (id, text, title, metadata): what `DocumentEncoder` encodes

logger = logging.getLogger(__name__)

__all__ = ["EncodeConfig", "encode_corpus", "corpus_ids_texts", "require_ray", "BACKENDS"]

BACKENDS = ("local", "torchrun", "ray")
RAY_MISSING = "the Ray backend needs Ray Data: pip install 'mbert-retrieval[ray]'"


@dataclass
class EncodeConfig:
    """How `encode_corpus` runs (the arguments besides the corpus, model and output folder)."""

    n_shards: int = 1
    backend: str = "local"
    ray_address: str | None = None  # None: an already initialised Ray, else a new local one
    num_workers: int | None = None  # Ray actors; None: one per GPU, else one per `cpus_per_worker` CPUs
    cpus_per_worker: float = 1.0  # CPU actors: CPUs reserved (and torch threads) per model replica
    batch_size: int = 64  # documents per Ray batch (the model batches them further by token budget)
    model_kwargs: dict = field(default_factory=dict)  # passed to `load_model` (e.g. dim=, max_length=)
    show_progress: bool = False
    window: dict | None = None  # `WindowConfig.to_dict()`: split long documents into windows (`DocumentEncoder`)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.n_shards < 1:
            raise ValueError(f"n_shards must be >= 1, got {self.n_shards}")


def require_ray():
    """`import ray` (with `ray.data`), or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray


def corpus_rows(docs: Any) -> tuple[list[str], list[Row]]:
    """(ids, rows (id, text, title, metadata) as `DocumentEncoder.encode_documents` takes them) from what
    `corpus_ids_texts` takes ((id, text) pairs: no title, no metadata)."""
    from ..data import Document, load_corpus

    if isinstance(docs, (str, os.PathLike)):
        docs = load_corpus(docs)
    if isinstance(docs, Mapping):
        docs = list(docs.values())
    rows: list[Row] = []
    for d in docs:
        if isinstance(d, Document):
            rows.append((d.id, d.text or "", d.title or None, d.metadata or None))
        elif isinstance(d, Mapping):
            rows.append((str(d.get("id", d.get("_id"))), d.get("text") or "", d.get("title") or None,
                         d.get("metadata") or None))
        else:
            i, t = d
            rows.append((str(i), str(t), None, None))
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("document ids must be unique")
    return ids, rows


def corpus_ids_texts(docs: Any) -> tuple[list[str], list[str]]:
    """(ids, texts to encode, as `Index.add` encodes them) from a corpus path, `load_corpus`'s dict, Documents, dicts or (id, text) pairs."""
    from ..data import Document, load_corpus

    if isinstance(docs, (str, os.PathLike)):
        docs = load_corpus(docs)
    if isinstance(docs, Mapping):
        docs = list(docs.values())
    ids, texts = [], []
    for d in docs:
        if isinstance(d, Document):
            ids.append(d.id)
            texts.append(_index_text(d.title, d.text))
        elif isinstance(d, Mapping):
            ids.append(str(d.get("id", d.get("_id"))))
            texts.append(_index_text(d.get("title"), d.get("text")))
        else:
            i, t = d
            ids.append(str(i))
            texts.append(str(t))
    if len(set(ids)) != len(ids):
        raise ValueError("document ids must be unique")
    return ids, texts


def _index_text(title: str | None, text: str | None) -> str:
    """The text encoded for a document: what `Index.add` encodes for one (title, a space, the text), so that
    a sharded build and a single-process one encode the same strings."""
    return f"{title} {text or ''}" if title else (text or "")


def _model_id(model: Any, kind: str | None) -> str:
    if not isinstance(model, (str, os.PathLike)):
        return model.model_id
    from ..hub import FALLBACK_MODEL_ID, resolve_model

    resolved = resolve_model(str(model), kind or "dense")
    return FALLBACK_MODEL_ID if resolved.fallback else resolved.requested


def _load(model: Any, kind: str | None, **overrides):
    if not isinstance(model, (str, os.PathLike)):
        return model
    from ..hub import load_model

    return load_model(str(model), kind=kind, **overrides)


def _detect_kind(model: Any, kind: str | None) -> str:
    if kind is not None:
        return kind
    if not isinstance(model, (str, os.PathLike)):
        return model.kind
    from ..hub import detect_kind, resolve_model

    return detect_kind(resolve_model(str(model)).path)


def encode_corpus(docs: Any, model_path: Any, kind: str | None, out_dir: str | os.PathLike, n_shards: int = 1,
                  backend: str = "local", ray_address: str | None = None, num_workers: int | None = None,
                  config: EncodeConfig | None = None) -> ShardStore:
    """Encode `docs` with the model into `n_shards` shards under `out_dir`; finished shards are skipped.

    `model_path`: a path or hub id (every backend), or an already loaded BiEncoder/ColBERT (local and
    torchrun only). `kind`: "dense" | "colbert" | None (detected). `config` overrides the other arguments'
    defaults (`EncodeConfig`). Returns the `ShardStore` of `out_dir`.
    """
    cfg = config or EncodeConfig(n_shards=n_shards, backend=backend, ray_address=ray_address,
                                 num_workers=num_workers)
    kind = _detect_kind(model_path, kind)
    ids, rows = corpus_rows(docs)
    if cfg.backend == "ray":
        if not isinstance(model_path, (str, os.PathLike)):
            raise TypeError("the Ray backend loads the model in each worker: pass a path or hub id, not a model")
        require_ray()  # fail before touching the output folder
    model = None
    if cfg.backend != "ray" and not isinstance(model_path, (str, os.PathLike)):
        model = model_path
    store = ShardStore.create_or_resume(out_dir, ids, _model_id(model or model_path, kind), kind, cfg.n_shards,
                                        model_config=dict(getattr(model, "cache_key", {}) or {}), window=cfg.window)
    if cfg.backend == "torchrun":
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if not 0 <= rank < world:
            raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
        todo = store.pending([i for i in range(cfg.n_shards) if i % world == rank])
        overrides = {}
        if model is None:
            import torch

            if torch.cuda.is_available():
                overrides["device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', rank % torch.cuda.device_count()))}"
        _encode_local(store, ids, rows, todo,
                      lambda: _load(model or model_path, kind, **cfg.model_kwargs, **overrides), cfg)
        _barrier()
    elif cfg.backend == "local":
        _encode_local(store, ids, rows, store.pending(), lambda: _load(model or model_path, kind, **cfg.model_kwargs),
                      cfg)
    else:
        _encode_ray(store, ids, rows, store.pending(), str(model_path), kind, cfg)
    store.refresh()
    return store


def _window(cfg: EncodeConfig) -> Any:
    from ..windows import WindowConfig

    return WindowConfig.from_value(cfg.window)


def _encode_local(store: ShardStore, ids: list[str], rows: list[Row], todo: list[int], get_model, cfg) -> None:
    if not todo:
        logger.info("all %d shards in %s are already encoded", store.n_shards, store.dir)
        return
    model = get_model()
    from tqdm.auto import tqdm

    from ..doc_encoder import DocumentEncoder

    encoder, window = DocumentEncoder(model), _window(cfg)
    for shard in tqdm(todo, desc="encode shards", unit="shard", disable=not cfg.show_progress):
        start, stop = store.shard_range(shard)
        vectors, spans = encoder.encode_documents(rows[start:stop], [None] * (stop - start), window)
        store.write_shard(shard, ids[start:stop], vectors, spans if window is not None else None)


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _EncodeActor:
    """Ray Data actor: one model replica; a batch of documents -> per document its row count, its rows' float32
    vectors and (colbert) token counts as bytes, and (windows) its window spans as bytes."""

    def __init__(self, model_path: str, kind: str, threads: int, model_kwargs: dict, window: dict | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        from ..doc_encoder import DocumentEncoder
        from ..hub import load_model
        from ..windows import WindowConfig

        self.encoder = DocumentEncoder(load_model(model_path, kind=kind, **model_kwargs))
        self.kind = kind
        self.window = WindowConfig.from_value(window)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import json

        rows: list[Row] = [("", str(t), str(ti) or None, json.loads(str(m)) if str(m) else None)
                           for t, ti, m in zip(batch["text"], batch["title"], batch["meta"])]
        vectors, spans = self.encoder.encode_documents(rows, [None] * len(rows), self.window)
        n_rows, vecs, lens, windows = [], [], [], []
        for v, w in zip(vectors, spans):
            mats = [v] if w is None else list(v)
            n_rows.append(len(mats))
            vecs.append(np.ascontiguousarray(np.concatenate([np.asarray(m, np.float32).reshape(-1, np.shape(m)[-1])
                                                             for m in mats]), np.float32).tobytes())
            lens.append(np.array([len(m) if self.kind == "colbert" else 1 for m in mats], np.int64).tobytes())
            windows.append(np.asarray(w if w is not None else [], np.int64).tobytes())
        return {"shard": batch["shard"], "row": batch["row"], "rows": np.array(n_rows, np.int64),
                "vec": np.array(vecs, dtype=object), "lens": np.array(lens, dtype=object),
                "spans": np.array(windows, dtype=object)}


def _encode_ray(store: ShardStore, ids: list[str], rows: list[Row], todo: list[int], model_path: str, kind: str,
                cfg: EncodeConfig) -> None:
    ray = require_ray()
    if not todo:
        return
    sizes = {s: store.shard_range(s)[1] - store.shard_range(s)[0] for s in todo}
    for s in [s for s in todo if sizes[s] == 0]:
        store.write_shard(s, [], [], [] if cfg.window is not None else None)
    import json

    items = []
    for s in todo:
        for r in range(sizes[s]):
            _, text, title, metadata = rows[store.shard_range(s)[0] + r]
            meta = json.dumps(metadata) if cfg.window is not None and metadata else ""  # only windows need it
            items.append({"shard": s, "row": r, "text": text, "title": title or "", "meta": meta})
    if not items:
        return
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=cfg.ray_address, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=cfg.show_progress)
    try:
        n_gpus = int(ray.cluster_resources().get("GPU", 0))
        n_cpus = float(ray.cluster_resources().get("CPU", 1))
        workers = cfg.num_workers or (n_gpus if n_gpus else max(1, int(n_cpus // cfg.cpus_per_worker)))
        resources = {"num_gpus": 1} if n_gpus else {"num_cpus": cfg.cpus_per_worker}
        ctx = ray.data.DataContext.get_current()
        saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
        ctx.execution_options.preserve_order = True  # shards complete one after the other: bounded memory
        ctx.enable_progress_bars = cfg.show_progress
        data_logger = logging.getLogger("ray.data")
        saved_level = data_logger.level
        if not cfg.show_progress:
            data_logger.setLevel(logging.WARNING)
        try:
            ds = ray.data.from_items(items, override_num_blocks=max(workers * 2, min(len(todo) * 2, 200)))
            ds = ds.map_batches(_EncodeActor, batch_size=cfg.batch_size, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=workers),
                                fn_constructor_kwargs={"model_path": model_path, "kind": kind,
                                                       "threads": int(cfg.cpus_per_worker),
                                                       "model_kwargs": cfg.model_kwargs, "window": cfg.window},
                                **resources)
            _collect(store, ids, ds.iter_batches(batch_size=None, batch_format="numpy"), sizes, kind)
        finally:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
            data_logger.setLevel(saved_level)
    finally:
        if owned:
            ray.shutdown()


def _collect(store: ShardStore, ids: list[str], batches: Iterable[dict], sizes: dict[int, int], kind: str) -> None:
    """Gather streamed documents per shard; write each shard once all its documents are in."""
    buffers: dict[int, dict[int, tuple[Any, Any]]] = {}
    for batch in batches:
        for j, (s, r) in enumerate(zip(batch["shard"].tolist(), batch["row"].tolist())):
            buf = buffers.setdefault(s, {})
            buf[r] = _decode(batch, j, kind, store.dim)
            if len(buf) == sizes[s]:
                start, stop = store.shard_range(s)
                docs = [buf[i] for i in range(sizes[s])]
                store.write_shard(s, ids[start:stop], [v for v, _ in docs],
                                  [w for _, w in docs] if store.manifest.window is not None else None)
                del buffers[s]
    if buffers:
        raise RuntimeError(f"Ray returned incomplete shards {sorted(buffers)}")


def _decode(batch: dict, j: int, kind: str, dim: int | None) -> tuple[Any, list[tuple[int, int]] | None]:
    """(vectors, window spans) of document `j` of an actor's output batch (see `_EncodeActor`)."""
    n_rows = int(batch["rows"][j])
    flat = np.frombuffer(batch["vec"][j], dtype=np.float32)
    lens = np.frombuffer(batch["lens"][j], dtype=np.int64)
    n_vectors = int(lens.sum())
    width = flat.size // n_vectors if n_vectors else (dim or 0)
    mat = flat.reshape(n_vectors, width)
    if kind == "dense":
        mats: list[np.ndarray] = list(mat)
    else:
        bounds = offsets_of(lens)
        mats = [mat[bounds[i]: bounds[i + 1]] for i in range(n_rows)]
    if n_rows == 1:
        return mats[0], None
    spans = np.frombuffer(batch["spans"][j], dtype=np.int64).reshape(-1, 2)
    return (np.stack(mats) if kind == "dense" else mats), [(int(a), int(b)) for a, b in spans]
