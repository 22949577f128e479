"""Results files and terminal tables.

- `mteb_result`: one task's result in the JSON shape MTEB leaderboards read
  (`task_name`, `dataset_revision`, `scores: {split: [{..., "main_score", "hf_subset", "languages"}]}`,
  `evaluation_time`), plus `model_name` / `model_revision` and the dataset's content fingerprint.
- `beir_flat`: BEIR-style flat dict (`NDCG@10`, `Recall@100`, `MRR@10`, `MAP@10`, `P@1`, ...).
- `results_table` / `print_results_table`: a rich table over several datasets with an average row.
- `write_mteb_layout`: the folder layout MTEB's results repository and leaderboard read,
  `<model name with / as __>/<revision>/<TaskName>.json` next to `model_meta.json`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from ._atomic import atomic_write_json
from .metrics import EvalResult

__all__ = [
    "MAIN_METRICS",
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


def _mteb_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("mteb")
    except Exception:
        return None


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
    `mteb_version` is only written when the mteb package is installed."""
    if main_score not in result.scores:
        raise KeyError(f"main score {main_score!r} not among the computed scores {sorted(result.scores)}")
    entry: dict[str, Any] = dict(result.scores)
    entry.update({"main_score": result.scores[main_score], "hf_subset": hf_subset, "languages": list(languages)})
    out: dict[str, Any] = {"dataset_revision": dataset_revision, "task_name": task_name}
    version = _mteb_version()
    if version:
        out["mteb_version"] = version
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
    """Print `results_table(...)` to the terminal (stderr by default, so stdout stays clean) and return it."""
    table = results_table(results, metrics, title)
    (console or Console(stderr=True)).print(table)
    return table


def write_results_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (UTF-8, indented)."""
    return atomic_write_json(path, obj)


def _slug(model_name: str) -> str:
    """MTEB's folder name for a model: the hub id with '/' as '__' (a local path: its last two parts)."""
    parts = [p for p in str(model_name).replace("\\", "/").split("/") if p and p not in (".", "..")]
    return "__".join(parts[-2:]) or "model"


def model_meta(model: Any, model_name: str, model_revision: str | None) -> dict[str, Any]:
    """MTEB's `model_meta.json` fields that can be read off a loaded model (the rest stay None)."""
    kind = getattr(model, "kind", None)
    params = None
    if hasattr(model, "parameters"):
        try:
            params = int(sum(p.numel() for p in model.parameters()))
        except Exception:  # noqa: BLE001 - a fake model in tests, say
            params = None
    encoder = getattr(model, "encoder", None)
    max_tokens = getattr(getattr(encoder, "config", None), "max_length", None)
    return {"name": model_name, "revision": model_revision, "release_date": None, "languages": None,
            "n_parameters": params, "memory_usage_mb": None, "max_tokens": max_tokens,
            "embed_dim": getattr(model, "dim", None), "license": None, "open_weights": None,
            "public_training_code": None, "public_training_data": None,
            "framework": ["PyTorch", "PyLate" if kind == "colbert" else "Sentence Transformers"],
            "similarity_fn_name": "MaxSim" if kind == "colbert" else "cosine", "use_instructions": None,
            "training_datasets": None, "adapted_from": None, "superseded_by": None, "loader": None}


def write_mteb_layout(root: str | os.PathLike, results: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> Path:
    """Write `<root>/<model>/<revision>/<TaskName>.json` for each MTEB-shaped result in `results` (keyed by
    task name) and `model_meta.json` beside them; returns that folder."""
    folder = Path(root) / _slug(str(meta.get("name") or "model")) / (meta.get("revision") or "no_revision_available")
    for task, res in results.items():
        atomic_write_json(folder / f"{task}.json", res)
    atomic_write_json(folder / "model_meta.json", meta)
    return folder
