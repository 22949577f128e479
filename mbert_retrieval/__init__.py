"""mbert-retrieval: dense and late-interaction retrieval on the ModernBERT encoder."""

from __future__ import annotations

__version__ = "0.1.0"

from .batching import token_budget_batches
from .biencoder import BiEncoder, BiEncoderConfig
from .chunking import ChunkingConfig
from .encoder import EncodedBatch, Encoder, EncoderConfig
from .maxsim import maxsim
from .pooling import normalize, pool, truncate_dim

__all__ = [
    "__version__",
    "BiEncoder",
    "BiEncoderConfig",
    "ChunkingConfig",
    "EncodedBatch",
    "Encoder",
    "EncoderConfig",
    "maxsim",
    "normalize",
    "pool",
    "token_budget_batches",
    "truncate_dim",
]
