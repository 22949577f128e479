"""Beyond one machine: encode a corpus into embedding shards (one process, torchrun ranks or a Ray cluster)
and serve one index per shard as a single `ShardedIndex`. Ray is optional (`pip install 'mbert-retrieval[ray]'`)
and imported only by the Ray backend."""

from .build import build_sharded
from .encode import EncodeConfig, corpus_ids_texts, encode_corpus
from .sharded_index import ShardedIndex, ShardedManifest, is_sharded, merge_hits
from .shards import ShardCorruptError, ShardData, ShardStore, ShardsManifest, shard_boundaries
from .sizing import ivfpq_bytes_per_vector

__all__ = [
    "build_sharded", "encode_corpus", "EncodeConfig", "corpus_ids_texts", "ShardedIndex", "ShardedManifest",
    "is_sharded", "merge_hits", "ShardStore", "ShardsManifest", "ShardData", "ShardCorruptError",
    "shard_boundaries", "ivfpq_bytes_per_vector",
]  # fmt: skip
