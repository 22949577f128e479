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

Every backend skips shards already finished in `out_dir` (resume) and produces the same shards.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from .shards import ShardStore

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


def corpus_ids_texts(docs: Any) -> tuple[list[str], list[str]]:
    """(ids, texts to encode) from a corpus path, `load_corpus`'s dict, Documents, dicts or (id, text) pairs."""
    from ..data import Document, document_text, load_corpus

    if isinstance(docs, (str, os.PathLike)):
        docs = load_corpus(docs)
    if isinstance(docs, Mapping):
        docs = list(docs.values())
    ids, texts = [], []
    for d in docs:
        if isinstance(d, Document):
            ids.append(d.id)
            texts.append(document_text(d))
        elif isinstance(d, Mapping):
            ids.append(str(d.get("id", d.get("_id"))))
            texts.append(document_text(d))
        else:
            i, t = d
            ids.append(str(i))
            texts.append(str(t))
    if len(set(ids)) != len(ids):
        raise ValueError("document ids must be unique")
    return ids, texts


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
    ids, texts = corpus_ids_texts(docs)
    if cfg.backend == "ray":
        if not isinstance(model_path, (str, os.PathLike)):
            raise TypeError("the Ray backend loads the model in each worker: pass a path or hub id, not a model")
        require_ray()  # fail before touching the output folder
    model = None
    if cfg.backend != "ray" and not isinstance(model_path, (str, os.PathLike)):
        model = model_path
    store = ShardStore.create_or_resume(out_dir, ids, _model_id(model or model_path, kind), kind, cfg.n_shards,
                                        model_config=dict(getattr(model, "cache_key", {}) or {}))
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
        _encode_local(store, ids, texts, todo,
                      lambda: _load(model or model_path, kind, **cfg.model_kwargs, **overrides), cfg)
        _barrier()
    elif cfg.backend == "local":
        _encode_local(store, ids, texts, store.pending(), lambda: _load(model or model_path, kind, **cfg.model_kwargs),
                      cfg)
    else:
        _encode_ray(store, ids, texts, store.pending(), str(model_path), kind, cfg)
    store.refresh()
    return store


def _encode_local(store: ShardStore, ids: list[str], texts: list[str], todo: list[int], get_model, cfg) -> None:
    if not todo:
        logger.info("all %d shards in %s are already encoded", store.n_shards, store.dir)
        return
    model = get_model()
    from tqdm.auto import tqdm

    for shard in tqdm(todo, desc="encode shards", unit="shard", disable=not cfg.show_progress):
        start, stop = store.shard_range(shard)
        store.write_shard(shard, ids[start:stop], model.encode_documents(texts[start:stop]))


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _EncodeActor:
    """Ray Data actor: one model replica; a batch of rows -> their vectors (colbert: float32 bytes)."""

    def __init__(self, model_path: str, kind: str, threads: int, model_kwargs: dict) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        from ..hub import load_model

        self.model = load_model(model_path, kind=kind, **model_kwargs)
        self.kind = kind

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.model.encode_documents([str(t) for t in batch["text"]])
        result = {"shard": batch["shard"], "row": batch["row"]}
        if self.kind == "dense":
            result["vec"] = np.asarray(out, dtype=np.float32)
        else:
            result["n"] = np.array([len(m) for m in out], dtype=np.int64)
            result["vec"] = np.array([np.ascontiguousarray(m, np.float32).tobytes() for m in out], dtype=object)
        return result


def _encode_ray(store: ShardStore, ids: list[str], texts: list[str], todo: list[int], model_path: str, kind: str,
                cfg: EncodeConfig) -> None:
    ray = require_ray()
    if not todo:
        return
    sizes = {s: store.shard_range(s)[1] - store.shard_range(s)[0] for s in todo}
    for s in [s for s in todo if sizes[s] == 0]:
        store.write_shard(s, [], np.zeros((0, 0), np.float32) if kind == "dense" else [])
    items = [{"shard": s, "row": r, "text": texts[store.shard_range(s)[0] + r]}
             for s in todo for r in range(sizes[s])]
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
                                                       "model_kwargs": cfg.model_kwargs}, **resources)
            _collect(store, ids, ds.iter_batches(batch_size=None, batch_format="numpy"), sizes, kind)
        finally:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
            data_logger.setLevel(saved_level)
    finally:
        if owned:
            ray.shutdown()


def _collect(store: ShardStore, ids: list[str], batches: Iterable[dict], sizes: dict[int, int], kind: str) -> None:
    """Gather streamed rows per shard; write each shard once all its rows are in."""
    buffers: dict[int, dict[int, np.ndarray]] = {}
    dim = store.dim
    for batch in batches:
        for j, (s, r) in enumerate(zip(batch["shard"].tolist(), batch["row"].tolist())):
            if kind == "dense":
                vec = np.asarray(batch["vec"][j], dtype=np.float32)
            else:
                flat = np.frombuffer(batch["vec"][j], dtype=np.float32)
                n = int(batch["n"][j])
                dim = dim or (flat.size // n if n else None)
                vec = flat.reshape(n, dim or 0)  # n > 0: dim is set just above
            buf = buffers.setdefault(s, {})
            buf[r] = vec
            if len(buf) == sizes[s]:
                start, stop = store.shard_range(s)
                rows = [buf[i] for i in range(sizes[s])]
                store.write_shard(s, ids[start:stop], np.stack(rows) if kind == "dense" else rows)
                del buffers[s]
    if buffers:
        raise RuntimeError(f"Ray returned incomplete shards {sorted(buffers)}")
