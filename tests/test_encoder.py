import importlib.util

import pytest
import torch

from mbert_retrieval.encoder import Encoder, EncoderConfig, _resolve_dtype, pick_attn_implementation

TEXTS = [
    "hello world",
    "a much longer sentence that goes on and on for quite a few tokens so that the sliding window "
    "attention of the local layers really matters here, more than sixteen tokens for sure",
    "short",
    "medium length text about retrieval models",
    "x " * 60,
    "ModernBERT encoders use alternating global and local attention",
]


def _reference(enc: Encoder, ids):
    """Each text alone, no padding anywhere: the ground truth for every batched path."""
    with torch.no_grad():
        return [enc.model(input_ids=torch.tensor([x])).last_hidden_state[0] for x in ids]


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("packing", [False, True])
def test_batched_paths_match_unbatched(tiny_modernbert, attn, packing):
    enc = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(attn_implementation=attn, packing=packing))
    assert enc.attn_implementation == attn
    ids = enc.tokenize(TEXTS)
    assert max(len(x) for x in ids) > 2 * 16  # longer than the local attention window
    with torch.no_grad():
        batch = enc.forward_ids(ids)
    assert batch.hidden.shape == (sum(map(len, ids)), enc.hidden_size)
    assert _max_diff(batch.split(), _reference(enc, ids)) < 1e-5


def test_sdpa_and_eager_agree(tiny_modernbert):
    outs = []
    for attn in ("sdpa", "eager"):
        enc = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(attn_implementation=attn))
        ids = enc.tokenize(TEXTS)
        outs.append(enc.map(ids, lambda b: b.split()))
    assert _max_diff(*outs) < 1e-5


def test_packed_path_on_bert(minilm_path):
    """Packing is not ModernBERT-only: absolute-position encoders get a 4D block-diagonal mask."""
    enc = Encoder.from_pretrained(minilm_path, EncoderConfig(packing=True))
    ids = enc.tokenize(TEXTS)
    with torch.no_grad():
        batch = enc.forward_ids(ids)
    assert _max_diff(batch.split(), _reference(enc, ids)) < 1e-4


@pytest.mark.parametrize("budget,max_bs", [(64, 2), (128, 3), (100000, 256)])
def test_batching_is_order_invariant(tiny_modernbert, budget, max_bs):
    enc = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(max_tokens_per_batch=budget, max_batch_size=max_bs))
    ids = enc.tokenize(TEXTS)
    pooled = enc.map(ids, lambda b: [h.mean(0) for h in b.split()])
    ref = [h.mean(0) for h in _reference(enc, ids)]
    assert _max_diff(pooled, ref) < 1e-5
    # shuffled input gives the same vectors, in the new order
    perm = [3, 0, 5, 1, 4, 2]
    shuffled = enc.map([ids[i] for i in perm], lambda b: [h.mean(0) for h in b.split()])
    assert _max_diff(shuffled, [pooled[i] for i in perm]) < 1e-5


def test_truncation_and_prompt(tiny_modernbert):
    enc = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(max_length=8))
    ids = enc.tokenize(["one two three four five six seven eight nine ten"])
    assert len(ids[0]) == 8
    with_prompt = enc.tokenize(["hello"], prompt="query: ")
    plain = enc.tokenize(["hello"])
    assert len(with_prompt[0]) > len(plain[0])
    with pytest.raises(TypeError):
        enc.tokenize("not a list")


def test_max_length_clamped_to_model_positions(tiny_modernbert):
    enc = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(max_length=8192))
    assert enc.config.max_length == 1024  # the tiny model has 1024 positions


@pytest.mark.parametrize("packing", [False, True])
def test_long_texts_past_512_tokens(tiny_modernbert, packing):
    """Texts of ~1000 tokens (the tiny model's 1024 positions; 8192 for ModernBERT-base) encode whole, in a
    batch with short ones, exactly as alone: nothing is cut at 512."""
    enc = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(max_length=1024, packing=packing,
                                                                 max_tokens_per_batch=4096))
    long_text = " ".join(f"token{i % 97} word{i % 13}" for i in range(600))
    ids = enc.tokenize([long_text, "short text", long_text[:2000]])
    assert 900 < len(ids[0]) <= 1024 and len(ids[2]) > 512
    with torch.no_grad():
        batch = enc.forward_ids(ids)
    assert batch.lengths.tolist() == [len(x) for x in ids]
    assert _max_diff(batch.split(), _reference(enc, ids)) < 1e-4


def test_backend_and_dtype_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert pick_attn_implementation(cpu) == "sdpa"
    assert pick_attn_implementation(cpu, "eager") == "eager"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    assert pick_attn_implementation(torch.device("cuda")) == "flash_attention_2"
    assert pick_attn_implementation(torch.device("cuda"), dtype=torch.bfloat16) == "flash_attention_2"
    assert pick_attn_implementation(torch.device("cuda"), dtype=torch.float32) == "sdpa"  # no fp32 kernels
    assert pick_attn_implementation(cpu) == "sdpa"
    assert _resolve_dtype("auto", cpu) == torch.float32
    assert _resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError):
        _resolve_dtype("int3", cpu)


def test_gradients_flow_through_forward_ids(tiny_modernbert):
    enc = Encoder.from_pretrained(tiny_modernbert)
    out = enc.forward_ids(enc.tokenize(["a b c", "d e"]))
    out.hidden.sum().backward()
    assert any(p.grad is not None for p in enc.model.parameters())


def test_empty_sequence_rejected(tiny_modernbert):
    enc = Encoder.from_pretrained(tiny_modernbert)
    with pytest.raises(ValueError):
        enc.forward_ids([[]])
