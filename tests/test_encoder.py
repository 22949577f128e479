import importlib.util

import pytest
import torch

from mbert_retrieval import encoder as encoder_module
from mbert_retrieval.encoder import (Encoder, EncoderConfig, Precision, _resolve_dtype, pick_attn_implementation,
                                     resolve_precision)

TEXTS = [
    "hello world",
    "a much longer sentence that goes on and on for quite a few tokens so that the sliding window "
    "attention of the local layers really matters here, more than sixteen tokens for sure",
    "short",
    "medium length text about retrieval models",
    "x " * 60,
    "ModernBERT encoders use alternating global and local attention",
]


@pytest.fixture(autouse=True)
def _no_native_bf16(monkeypatch):
    """These tests compare batched paths with float32 references: the same on every CPU, with or without
    native bf16 (the tests below that need it switch it on)."""
    monkeypatch.setattr(encoder_module, "_native_bf16_cpu", lambda: False)


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


def test_precision_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == Precision(torch.float32, torch.float32)
    monkeypatch.setattr(encoder_module, "_native_bf16_cpu", lambda: True)
    auto = resolve_precision("auto", cpu)
    assert auto == Precision(torch.float32, torch.bfloat16) and auto.autocast  # fp32 weights, bf16 matmuls
    assert _resolve_dtype("auto", cpu) == torch.float32
    for name, dtype in [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]:
        assert resolve_precision(name, cpu) == Precision(dtype, dtype)  # an explicit dtype overrides "auto"


def _linear_output_dtypes(enc: Encoder, ids) -> set:
    seen: set = set()
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
             for m in enc.model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            batch = enc.forward_ids(ids)
    finally:
        for h in hooks:
            h.remove()
    assert batch.hidden.dtype == torch.float32  # pooling and normalisation always see float32
    return seen


@pytest.mark.parametrize("native", [False, True])
def test_auto_dtype_runs_bf16_matmuls_only_on_native_bf16_cpus(tiny_modernbert, monkeypatch, native):
    monkeypatch.setattr(encoder_module, "_native_bf16_cpu", lambda: native)
    enc = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(device="cpu"))
    assert next(enc.model.parameters()).dtype == torch.float32
    assert enc.precision.autocast is native
    ids = enc.tokenize(TEXTS)
    assert _linear_output_dtypes(enc, ids) == {torch.bfloat16 if native else torch.float32}
    with torch.no_grad():
        got = [h.mean(0) for h in enc.forward_ids(ids).split()]
    ref = [h.mean(0) for h in _reference(enc, ids)]
    cos = min(torch.nn.functional.cosine_similarity(a, b, dim=0).item() for a, b in zip(got, ref))
    assert cos > (0.99 if native else 0.999999)
    fp32 = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(device="cpu", dtype="float32"))
    assert not fp32.precision.autocast  # --dtype float32 overrides the automatic choice


def test_bf16_weights_give_float32_token_states(tiny_modernbert):
    enc = Encoder.from_pretrained(tiny_modernbert, EncoderConfig(device="cpu", dtype="bfloat16"))
    assert next(enc.model.parameters()).dtype == torch.bfloat16 and not enc.precision.autocast
    assert _linear_output_dtypes(enc, enc.tokenize(TEXTS)) == {torch.bfloat16}


@pytest.fixture(scope="module")
def tiny_modernbert_8192(tmp_path_factory, minilm_path) -> str:
    """The tiny ModernBERT with ModernBERT's full 8192 positions."""
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel

    tok = AutoTokenizer.from_pretrained(minilm_path)
    config = ModernBertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, local_attention=16, global_attn_every_n_layers=2,
                              max_position_embeddings=8192, pad_token_id=tok.pad_token_id,
                              cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                              mask_token_id=tok.mask_token_id, bos_token_id=tok.cls_token_id,
                              eos_token_id=tok.sep_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_modernbert_8192")
    ModernBertModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("packing", [False, True])
def test_8192_token_input_gets_its_own_batch(tiny_modernbert_8192, monkeypatch, packing):
    """One 8192-token input among short ones: every batch stays within the token budget and the long input
    is never padded together with short ones (no (batch x 8192) rows, no 8192^2 attention for short texts)."""
    budget = 16384
    enc = Encoder.from_pretrained(tiny_modernbert_8192, EncoderConfig(max_length=8192, max_tokens_per_batch=budget,
                                                                      packing=packing))
    assert enc.config.max_length == 8192
    long_text = " ".join(f"w{i % 50}" for i in range(9000))
    texts = ["short one", long_text, "a few more words here", "x " * 40, "tiny"]
    ids = enc.tokenize(texts)
    assert len(ids[1]) == 8192
    seen: list[list[int]] = []
    forward = enc.forward_ids

    def recording(batch_ids):
        seen.append([len(x) for x in batch_ids])
        return forward(batch_ids)

    monkeypatch.setattr(enc, "forward_ids", recording)
    out = enc.map(ids, lambda b: [h.shape for h in b.split()])
    assert [s[0] for s in out] == [len(x) for x in ids]
    assert sorted(n for batch in seen for n in batch) == sorted(len(x) for x in ids)
    assert all(len(batch) * max(batch) <= budget for batch in seen)
    assert [8192] in seen  # the long input alone
