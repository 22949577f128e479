"""mbert-retrieval: dense and late-interaction retrieval on the ModernBERT encoder.

The public names are imported on first use (PEP 562), so `import mbert_retrieval` — and with it the `mbret`
command line, whose `--help`, `info` and `delete` need no model — does not import torch or transformers."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "token_budget_batches": "batching",
    "BiEncoder": "biencoder",
    "BiEncoderConfig": "biencoder",
    "ChunkingConfig": "chunking",
    "ColBERT": "colbert",
    "ColBERTConfig": "colbert",
    "DocumentEncoder": "doc_encoder",
    "build_index": "doc_encoder",
    "EncodedBatch": "encoder",
    "Encoder": "encoder",
    "EncoderConfig": "encoder",
    "load_model": "hub",
    "Hit": "index",
    "Index": "index",
    "maxsim": "maxsim",
    "normalize": "pooling",
    "pool": "pooling",
    "truncate_dim": "pooling",
    "Result": "retriever",
    "Retriever": "retriever",
    "WindowConfig": "windows",
}

__all__ = [
    "__version__",
    "BiEncoder",
    "BiEncoderConfig",
    "ChunkingConfig",
    "ColBERT",
    "ColBERTConfig",
    "DocumentEncoder",
    "build_index",
    "EncodedBatch",
    "Encoder",
    "EncoderConfig",
    "Hit",
    "Index",
    "load_model",
    "maxsim",
    "normalize",
    "pool",
    "Result",
    "Retriever",
    "token_budget_batches",
    "truncate_dim",
    "WindowConfig",
]

if TYPE_CHECKING:  # static analysers see the real names
    from .batching import token_budget_batches
    from .biencoder import BiEncoder, BiEncoderConfig
    from .chunking import ChunkingConfig
    from .colbert import ColBERT, ColBERTConfig
    from .doc_encoder import DocumentEncoder, build_index
    from .encoder import EncodedBatch, Encoder, EncoderConfig
    from .hub import load_model
    from .index import Hit, Index
    from .maxsim import maxsim
    from .pooling import normalize, pool, truncate_dim
    from .retriever import Result, Retriever
    from .windows import WindowConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing the submodule `maxsim` binds it on the package under the name of the public function
    `maxsim`; keep the function there (as the eager `from .maxsim import maxsim` did)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
