"""mbert-retrieval: dense and late-interaction retrieval on the ModernBERT encoder."""

from __future__ import annotations

__version__ = "0.1.0"

from .batching import token_budget_batches
from .biencoder import BiEncoder, BiEncoderConfig
from .chunking import ChunkingConfig
from .colbert import ColBERT, ColBERTConfig
from .encoder import EncodedBatch, Encoder, EncoderConfig
from .hub import load_model
from .index import Hit, Index
from .maxsim import maxsim
from .pooling import normalize, pool, truncate_dim
from .retriever import Result, Retriever

__all__ = [
    "__version__",
    "BiEncoder",
    "BiEncoderConfig",
    "ChunkingConfig",
    "ColBERT",
    "ColBERTConfig",
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
]
