"""Beyond one machine: split the encoding of a corpus into embedding shards (one process, torchrun ranks or a
Ray cluster), then build one ordinary index from them (`build_sharded`). Ray is optional
(`pip install 'mbert-retrieval[ray]'`) and imported only by the Ray backend."""

from .build import EMBEDDINGS_DIR, ShardedBuild, build_sharded, fill_from_shards, resume_count
from .encode import EncodeConfig, corpus_ids_texts, encode_corpus
from .legacy import LegacyShardedError, check_not_legacy_sharded, is_legacy_sharded, legacy_sharded_message
from .shards import ShardCorruptError, ShardData, ShardStore, ShardsManifest, shard_boundaries
from .sizing import ivfpq_bytes_per_vector

__all__ = [
    "build_sharded", "ShardedBuild", "fill_from_shards", "resume_count", "EMBEDDINGS_DIR", "encode_corpus",
    "EncodeConfig", "corpus_ids_texts", "LegacyShardedError", "check_not_legacy_sharded", "is_legacy_sharded",
    "legacy_sharded_message", "ShardStore", "ShardsManifest", "ShardData", "ShardCorruptError", "shard_boundaries",
    "ivfpq_bytes_per_vector",
]  # fmt: skip
