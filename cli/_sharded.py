"""The sharded side of `mbret index` / `mbret info` (`--shards`, `--ray`, torchrun): option checks, the build
(the encoding split into shards, then one ordinary index) and the description of a build still encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import BadInput, err, fail, out, plain_mapping, plural, print_json
from ._corpus import print_read_summary


def check_shard_options(shards: int | None, ray: str | None, workers: int | None) -> str:
    """Validate --shards / --ray / --workers (and a torchrun launch); returns the encoding backend."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if shards is not None and shards < 1:
        raise BadInput(f"--shards must be >= 1, got {shards}")
    if ray is not None and shards is None:
        raise BadInput("--ray encodes the corpus in shards on a Ray cluster: give --shards N too")
    if ray is not None and not ray.strip():
        raise BadInput("--ray needs an address: ray://HOST:10001, auto or local")
    if workers is not None and ray is None:
        raise BadInput("--workers sets the number of Ray workers: use it with --ray")
    if workers is not None and workers < 1:
        raise BadInput(f"--workers must be >= 1, got {workers}")
    if world > 1 and shards is None:
        raise BadInput(f"launched under torchrun (WORLD_SIZE={world}): give --shards N so that the ranks share the "
                       "encoding (every rank would otherwise build the same index)")
    if world > 1 and ray is not None:
        raise BadInput("--ray and torchrun are two ways to distribute the encoding: use one of them")
    if ray is not None:
        from mbert_retrieval.distributed.encode import RAY_MISSING

        import importlib

        try:
            importlib.import_module("ray.data")
        except ImportError:
            fail(f"--ray: {RAY_MISSING}", 1)
        return "ray"
    return "torchrun" if world > 1 else "local"


def rank_device() -> dict[str, Any]:
    """Under torchrun, each rank encodes on its own GPU (LOCAL_RANK) when there are GPUs."""
    import os

    import torch

    if torch.cuda.is_available():
        return {"device": f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"}
    return {}


def index_sharded(corpus: Path, index_dir: Path, docs, loaded, kind: str, index_type: str, n_shards: int,
                  backend: str, ray: str | None, workers: int | None, hybrid: bool, model_kwargs: dict[str, Any],
                  json_out: bool, quiet: bool, read_info: dict[str, Any], **params: Any) -> None:
    """`mbret index --shards N`: the encoding split into N embedding shards (workers), then one ordinary index."""
    import os

    from mbert_retrieval.retriever import Retriever

    retriever = Retriever.build_sharded(index_dir, docs, loaded, kind, index_type, n_shards=n_shards, backend=backend,
                                        ray_address=ray, num_workers=workers, hybrid=hybrid, model_options=model_kwargs,
                                        show_progress=not quiet, **params)
    summary: dict[str, Any] = {"index": str(index_dir), "corpus": str(corpus), "kind": kind, "index_type": index_type,
                               "model_id": loaded.model_id, "shards": n_shards, "backend": backend, "hybrid": hybrid}
    if retriever is None:  # torchrun rank > 0
        summary.update(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")))
        if json_out:
            print_json(summary)
        else:
            out.print(f"rank {summary['rank']}: encoded its shards of {index_dir}; rank 0 builds the index")
        return
    with retriever:
        rows = retriever.info()
        summary.update(documents=len(retriever), windows=rows.get("n_windows", len(retriever)),
                       split_documents=rows.get("n_split_documents", 0), resumed_from=retriever.resumed_from,
                       fallback_model=bool(retriever.fallback_message), **read_info)
    if json_out:
        print_json(summary)
        return
    if summary["resumed_from"]:
        err.print(f"resumed: {plural(summary['resumed_from'], 'document')} already done")
    split = (f"; {plural(summary['split_documents'], 'long document')} split into windows, "
             f"{plural(summary['windows'], 'row')} in all" if summary["split_documents"] else "")
    out.print(f"[green]indexed[/green] {plural(summary['documents'], 'document')} into {index_dir} ({kind}/{index_type}, "
              f"encoding split into {n_shards} shards, {backend}, model {loaded.model_id}{split})")
    print_read_summary(read_info)


def sharded_build_started(index_dir: Path) -> bool:
    """An interrupted `mbret index --shards` that is still encoding (embedding shards, no index yet)."""
    from mbert_retrieval.distributed import EMBEDDINGS_DIR

    return not (Path(index_dir) / "manifest.json").exists() and (Path(index_dir) / EMBEDDINGS_DIR).is_dir()


def describe_encoding(index_dir: Path) -> dict[str, Any]:
    """`mbret info` of a sharded build interrupted while encoding (no index yet): what is done, how to resume."""
    from mbert_retrieval.distributed import EMBEDDINGS_DIR, ShardStore, resume_count

    info: dict[str, Any] = {"state": "encoding", "n_documents_done": resume_count(index_dir),
                            "resume_hint": "this sharded build was interrupted while encoding: re-run the same "
                                           "`mbret index ... --shards N` command to resume it"}
    try:
        m = ShardStore.open(Path(index_dir) / EMBEDDINGS_DIR).refresh()
    except (OSError, ValueError):
        return info
    info.update(kind=m.kind, model_id=m.model_id, dim=m.dim, n_shards=m.n_shards,
                n_shards_done=sum(r.done for r in m.shards))
    return plain_mapping(info)
