"""Fixtures for the training tests: tiny models (with dropout) and tiny data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PAIRS = [
    ("what color is the sky", "the sky is blue on a clear day"),
    ("how many legs does a spider have", "spiders have eight legs"),
    ("capital of france", "paris is the capital city of france"),
    ("boiling point of water", "water boils at one hundred degrees celsius"),
    ("largest planet", "jupiter is the largest planet in the solar system"),
    ("author of hamlet", "hamlet was written by william shakespeare"),
    ("speed of light", "light travels at about three hundred thousand kilometres per second"),
    ("fastest land animal", "the cheetah is the fastest land animal"),
]


@pytest.fixture(scope="session")
def pairs() -> list[tuple[str, str]]:
    return list(PAIRS)


@pytest.fixture(scope="session")
def tiny_dropout_model(tmp_path_factory, tiny_modernbert) -> str:
    """The tiny ModernBERT with dropout switched on (to test RNG restoring)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = tmp_path_factory.mktemp("tiny_dropout")
    cfg = AutoConfig.from_pretrained(tiny_modernbert)
    cfg.attention_dropout = cfg.mlp_dropout = cfg.embedding_dropout = 0.1
    model = AutoModel.from_pretrained(tiny_modernbert, config=cfg)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_modernbert).save_pretrained(path)
    return str(path)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def triples_file(tmp_path) -> Path:
    """8 (query, positive, 2 negatives, teacher scores) rows; negatives are other rows' positives."""
    rows = []
    for i, (q, p) in enumerate(PAIRS):
        negs = [PAIRS[(i + 1) % len(PAIRS)][1], PAIRS[(i + 3) % len(PAIRS)][1]]
        rows.append({"query": q, "positive": p, "negatives": negs, "scores": [5.0, 1.0, 0.5]})
    return write_jsonl(tmp_path / "triples.jsonl", rows)
