"""Results files and terminal tables.

- `mteb_result`: one task's result in the JSON shape MTEB leaderboards read (mteb's `TaskResult`, the schema
  of mteb >= 1.11; checked against mteb 2.26.24's `TaskResult.from_disk`): `task_name`, `dataset_revision`,
  `mteb_version`, `scores: {split: [{..., "main_score", "hf_subset", "languages"}]}`, `evaluation_time`, plus
  `model_name` / `model_revision` and the dataset's provenance (which mteb ignores).
- `model_identity`: the name and revision results files give a model: its hub id, never a local path.
- `beir_flat`: BEIR-style flat dict (`NDCG@10`, `Recall@100`, `MRR@10`, `MAP@10`, `P@1`, ...).
- `results_table` / `print_results_table`: a rich table over several datasets with an average row.
- `write_mteb_layout`: the folder layout MTEB's results repository and leaderboard read,
  `<model name with / as __>/<revision>/<TaskName>.json` next to `model_meta.json`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from ._atomic import atomic_write_json
from .metrics import EvalResult

__all__ = [
    "MAIN_METRICS",
    "MTEB_FORMAT_VERSION",
    "NO_REVISION",
    "ModelIdentity",
    "model_identity",
    "mteb_version",
    "mteb_result",
    "beir_flat",
    "average_scores",
    "results_table",
    "print_results_table",
    "write_results_json",
    "model_meta",
    "write_mteb_layout",
]

MAIN_METRICS: tuple[str, ...] = ("ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_10")


# The mteb release whose TaskResult schema the files follow (and were checked against with its own loader);
# written as `mteb_version` when mteb is not installed. mteb's loader reads a file without `mteb_version` as
# the pre-1.11 format and refuses it, so the field is always written.
MTEB_FORMAT_VERSION = "2.26.24"
# What MTEB writes for an unknown model or dataset revision (its folder name and model_meta.json value).
NO_REVISION = "no_revision_available"


def mteb_version() -> str:
    """The installed mteb's version, else `MTEB_FORMAT_VERSION` (the schema the files follow)."""
    try:
        from importlib.metadata import version

        return version("mteb")
    except Exception:  # noqa: BLE001 - not installed (PackageNotFoundError) or unreadable metadata
        return MTEB_FORMAT_VERSION


@dataclass(frozen=True)
class ModelIdentity:
    """How results files name a model. `name`: its hub id (`org/name`); for a local folder, the hub id recorded
    in its path (a hub cache snapshot) or else `local/<folder name>` (MTEB requires an `org/name` shape).
    `revision`: the hub commit when known. `location`: the local folder, if any. `adapted_from`: the hub id the
    folder's `mbert_retrieval.json` says it was saved from (a base model, not this one). `note`: why the name is
    not a hub id, for the user."""

    name: str
    revision: str | None = None
    location: str | None = None
    adapted_from: str | None = None
    note: str | None = None


def _hub_snapshot(path: str) -> tuple[str, str] | None:
    """(`org/name`, commit) of a folder inside the Hugging Face cache (`models--org--name/snapshots/<commit>`)."""
    parts = Path(os.path.abspath(path)).parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots" and len(parts[i]) > len("models--"):
            return parts[i][len("models--"):].replace("--", "/"), parts[i + 2]
    return None


def _looks_local(model_id: str) -> bool:
    """A filesystem path rather than a hub id (`name` or `org/name`)."""
    return (os.path.exists(model_id) or os.path.isabs(model_id) or model_id.startswith((".", "~"))
            or model_id.count("/") > 1 or "\\" in model_id)


def _packaged_hub_id(folder: str) -> str | None:
    """The hub id of a folder that a package ships as that hub model (the offline fallback's files)."""
    try:
        from mbert_retrieval.hub import FALLBACK_MODEL_ID, fallback_model_path

        return FALLBACK_MODEL_ID if os.path.samefile(folder, fallback_model_path()) else None
    except (ImportError, OSError, RuntimeError):
        return None


def _recorded_source(folder: str) -> str | None:
    """The hub id a model folder saved by this package was saved from (`mbert_retrieval.json`)."""
    try:
        source = json.loads((Path(folder) / "mbert_retrieval.json").read_text(encoding="utf-8")).get("source_model_id")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) and source and not _looks_local(source) else None


def model_identity(model: Any, name: str | None = None, revision: str | None = None) -> ModelIdentity:
    """The name and revision results files give `model` (`name` / `revision` override them). A hub id is kept;
    a local folder is named by the hub id in its path (hub cache) or `local/<folder name>`, never by its path."""
    model_id = str(getattr(model, "model_id", "") or type(model).__name__)
    local = _looks_local(model_id)
    snapshot = _hub_snapshot(model_id) if local else None
    if snapshot is None and not local:  # loaded by hub id: the snapshot folder it was read from names the commit
        resolved = getattr(getattr(model, "resolved", None), "path", None)
        found = _hub_snapshot(str(resolved)) if resolved else None
        snapshot = found if found and found[0] == model_id else None
    # the commit of the files read is more precise than the revision asked for (a branch or tag)
    rev = revision or (snapshot[1] if snapshot else None) or getattr(model, "revision", None)
    location = os.path.abspath(os.path.expanduser(model_id)) if local else None
    source = _recorded_source(model_id) if local else None
    if name:
        return ModelIdentity(name, rev, location, source)
    if not local:
        return ModelIdentity(model_id, rev)
    if snapshot is not None:
        return ModelIdentity(snapshot[0], rev, location, source)
    packaged = _packaged_hub_id(model_id)
    if packaged is not None:
        return ModelIdentity(packaged, rev, location, source)
    folder = Path(location or model_id).name or "model"
    named = f"local/{folder}"
    note = (f"{model_id} is a local folder with no hub id: the results files name it {named!r} "
            "(set the model_name option, `--option model_name=org/name` on the command line, to publish it by name)")
    return ModelIdentity(named, rev, location, source, note)


def mteb_result(
    result: EvalResult,
    task_name: str,
    split: str = "test",
    dataset_revision: str | None = None,
    languages: Sequence[str] = ("eng-Latn",),
    hf_subset: str = "default",
    evaluation_time: float | None = None,
    model_name: str | None = None,
    model_revision: str | None = None,
    main_score: str = "ndcg_at_10",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One task's result as an MTEB-style dict. Scores are fractions in [0, 1] (as MTEB writes them).
    `mteb_version` is always written (see `mteb_version()`); an unknown `dataset_revision` is written as
    `NO_REVISION`, since mteb requires a string there."""
    if main_score not in result.scores:
        raise KeyError(f"main score {main_score!r} not among the computed scores {sorted(result.scores)}")
    entry: dict[str, Any] = dict(result.scores)
    entry.update({"main_score": result.scores[main_score], "hf_subset": hf_subset, "languages": list(languages)})
    out: dict[str, Any] = {"dataset_revision": dataset_revision or NO_REVISION, "task_name": task_name,
                           "mteb_version": mteb_version()}
    out.update({
        "scores": {split: [entry]},
        "evaluation_time": evaluation_time,
        "kg_co2_emissions": None,
        "model_name": model_name,
        "model_revision": model_revision,
    })
    if extra:
        out.update(extra)
    return out


def beir_flat(result: EvalResult) -> dict[str, float]:
    """BEIR-style flat dict, e.g. {"NDCG@10": 0.71, "Recall@100": 0.93, "MRR@10": 0.68, ...}."""
    return result.beir()


def _scores(r: EvalResult | Mapping[str, float]) -> Mapping[str, float]:
    return r.scores if isinstance(r, EvalResult) else r


def average_scores(results: Iterable[EvalResult | Mapping[str, float]],
                   metrics: Sequence[str] | None = None) -> dict[str, float]:
    """Unweighted mean over datasets of each metric present in all of them (or of `metrics`)."""
    rows = [_scores(r) for r in results]
    if not rows:
        return {}
    keys = list(metrics) if metrics is not None else [k for k in rows[0] if all(k in r for r in rows)]
    return {k: math.fsum(r[k] for r in rows) / len(rows) for k in keys if all(k in r for r in rows)}


def _label(metric: str) -> str:
    name, _, k = metric.rpartition("_at_")
    names = {"ndcg": "nDCG", "recall": "Recall", "mrr": "MRR", "map": "MAP", "precision": "P"}
    return f"{names.get(name, name)}@{k}" if k else metric


def results_table(results: Mapping[str, EvalResult | Mapping[str, float]],
                  metrics: Sequence[str] = MAIN_METRICS, title: str | None = None,
                  average: bool = True, scale: float = 100.0) -> Table:
    """A rich table: one row per dataset, one column per metric (x100, 2 decimals), plus an average row
    when there is more than one dataset."""
    table = Table(title=title, show_lines=False)
    table.add_column("Dataset", style="bold")
    table.add_column("#Q", justify="right")
    shown = [m for m in metrics if any(m in _scores(r) for r in results.values())]
    for m in shown:
        table.add_column(_label(m), justify="right")
    for name, r in results.items():
        s = _scores(r)
        nq = str(r.num_queries) if isinstance(r, EvalResult) else ""
        table.add_row(name, nq, *[f"{s[m] * scale:.2f}" if m in s else "-" for m in shown])
    if average and len(results) > 1:
        avg = average_scores(results.values(), shown)
        table.add_section()
        table.add_row("Average", "", *[f"{avg[m] * scale:.2f}" if m in avg else "-" for m in shown], style="bold")
    return table


def print_results_table(results: Mapping[str, EvalResult | Mapping[str, float]],
                        metrics: Sequence[str] = MAIN_METRICS, title: str | None = None,
                        console: Console | None = None) -> Table:
    """Print `results_table(...)` (to stdout by default: the table is the result; progress and notes go to
    stderr) and return it."""
    table = results_table(results, metrics, title)
    (console or Console()).print(table)
    return table


def write_results_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (UTF-8, indented)."""
    return atomic_write_json(path, obj)


def _slug(model_name: str) -> str:
    """MTEB's folder name for a model (`ModelMeta.model_name_as_path`): the name with '/' as '__'."""
    return str(model_name).replace("/", "__").replace(" ", "_").replace("\\", "__").strip(".") or "model"


def model_meta(model: Any, model_name: str, model_revision: str | None,
               adapted_from: str | None = None) -> dict[str, Any]:
    """MTEB's `model_meta.json` fields that can be read off a loaded model (the rest stay None).
    `model_name` should be a hub id (see `model_identity`); an unknown revision is `NO_REVISION`, as MTEB writes."""
    kind = getattr(model, "kind", None)
    params = None
    if hasattr(model, "parameters"):
        try:
            params = int(sum(p.numel() for p in model.parameters()))
        except Exception:  # noqa: BLE001 - a fake model in tests, say
            params = None
    encoder = getattr(model, "encoder", None)
    max_tokens = getattr(getattr(encoder, "config", None), "max_length", None)
    return {"name": model_name, "revision": model_revision or NO_REVISION, "release_date": None, "languages": None,
            "n_parameters": params, "memory_usage_mb": None, "max_tokens": max_tokens,
            "embed_dim": getattr(model, "dim", None), "license": None, "open_weights": None,
            "public_training_code": None, "public_training_data": None,
            "framework": ["PyTorch", "PyLate" if kind == "colbert" else "Sentence Transformers"],
            "similarity_fn_name": "MaxSim" if kind == "colbert" else "cosine", "use_instructions": None,
            "training_datasets": None, "adapted_from": adapted_from, "superseded_by": None, "loader": None}


def write_mteb_layout(root: str | os.PathLike, results: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> Path:
    """Write `<root>/<model>/<revision>/<TaskName>.json` for each MTEB-shaped result in `results` (keyed by
    task name) and `model_meta.json` beside them; returns that folder."""
    folder = Path(root) / _slug(str(meta.get("name") or "model")) / _slug(str(meta.get("revision") or NO_REVISION))
    for task, res in results.items():
        atomic_write_json(folder / f"{task}.json", res)
    atomic_write_json(folder / "model_meta.json", meta)
    return folder
