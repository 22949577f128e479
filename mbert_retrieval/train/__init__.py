"""Fine-tuning: contrastive (InfoNCE, Matryoshka) and distillation training of bi-encoders and ColBERT
models, gradient caching, multi-process in-batch negatives, checkpoint/resume and hard-negative mining."""

from __future__ import annotations

from .config import ConfigError, TrainConfig, load_config
from .data import TrainBatch, TrainExample, epoch_batches, load_beir_examples, load_examples, load_jsonl_examples
from .gradcache import grad_cache_step
from .losses import RetrievalLoss, colbert_scores, info_nce, kl_distillation, matryoshka_info_nce
from .mining import ExactSearcher, MinedExample, mine_beir, mine_hard_negatives, write_mined_jsonl
from .trainer import Trainer, latest_checkpoint, train

__all__ = [
    "ConfigError", "TrainConfig", "load_config",
    "TrainBatch", "TrainExample", "epoch_batches", "load_beir_examples", "load_examples", "load_jsonl_examples",
    "grad_cache_step",
    "RetrievalLoss", "colbert_scores", "info_nce", "kl_distillation", "matryoshka_info_nce",
    "ExactSearcher", "MinedExample", "mine_beir", "mine_hard_negatives", "write_mined_jsonl",
    "Trainer", "latest_checkpoint", "train",
]
