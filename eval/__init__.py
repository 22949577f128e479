"""Evaluation: pytrec_eval metrics and TREC runs (`metrics`), dataset resolution for local BEIR folders, BEIR
names and CoIR hub sets (`datasets`), MTEB-shaped results and tables (`results`), and `evaluate_model`
(`evaluate`). Names are imported lazily so that `import mbert_retrieval.eval` stays cheap."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate_model": "evaluate", "EvalConfig": "evaluate", "EvaluationReport": "evaluate",
    "DatasetReport": "evaluate", "exact_search": "evaluate", "retriever_search_factory": "evaluate",
    "evaluate_run": "metrics", "EvalResult": "metrics", "save_trec_run": "metrics", "load_trec_run": "metrics",
    "resolve_dataset": "datasets", "ResolvedDataset": "datasets", "DatasetUnavailable": "datasets",
    "mteb_result": "results", "print_results_table": "results", "results_table": "results",
    "write_mteb_layout": "results", "model_meta": "results", "UnknownDataset": "datasets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
