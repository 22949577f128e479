import json

import numpy as np
import pytest
import torch

from mbert_retrieval.biencoder import BiEncoder, BiEncoderConfig
from mbert_retrieval.chunking import ChunkingConfig
from mbert_retrieval.encoder import EncoderConfig

SENTENCES = ["The cat sits on the mat.", "Quantum computers use qubits.", "Paris is the capital of France.",
             "x " * 80]


@pytest.fixture(scope="module")
def st():
    return pytest.importorskip("sentence_transformers")


def test_minilm_matches_sentence_transformers(st, minilm_path):
    ours = BiEncoder.from_pretrained(minilm_path)
    assert ours.config.pooling == "mean" and ours.config.normalize and ours.dim == 384
    assert ours.encoder.config.max_length == 256  # from sentence_bert_config.json
    theirs = st.SentenceTransformer(minilm_path, device="cpu")
    a = ours.encode_documents(SENTENCES)
    b = theirs.encode(SENTENCES, convert_to_numpy=True)
    assert a.dtype == np.float32 and a.shape == (4, 384)
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "lasttoken"])
def test_save_loads_in_sentence_transformers(st, tiny_modernbert, tmp_path, pooling):
    cfg = BiEncoderConfig(pooling=pooling, query_prompt="query: ", document_prompt="passage: ")
    model = BiEncoder.from_pretrained(tiny_modernbert, cfg)
    model.save_pretrained(tmp_path / "m")
    theirs = st.SentenceTransformer(str(tmp_path / "m"), device="cpu")
    np.testing.assert_allclose(model.encode_queries(SENTENCES),
                               theirs.encode(SENTENCES, prompt_name="query", convert_to_numpy=True), atol=2e-5)
    np.testing.assert_allclose(model.encode_documents(SENTENCES),
                               theirs.encode(SENTENCES, prompt_name="document", convert_to_numpy=True), atol=2e-5)
    again = BiEncoder.from_pretrained(str(tmp_path / "m"))
    assert again.config.pooling == pooling and again.config.query_prompt == "query: "
    np.testing.assert_allclose(again.encode_queries(SENTENCES), model.encode_queries(SENTENCES), atol=1e-6)


def test_exclude_prompt_from_pooling_like_st(st, tiny_modernbert, tmp_path):
    model = BiEncoder.from_pretrained(tiny_modernbert, BiEncoderConfig(query_prompt="query: ", include_prompt=False))
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m/1_Pooling/config.json").read_text())["include_prompt"] is False
    theirs = st.SentenceTransformer(str(tmp_path / "m"), device="cpu")
    np.testing.assert_allclose(model.encode_queries(SENTENCES),
                               theirs.encode(SENTENCES, prompt_name="query", convert_to_numpy=True), atol=2e-5)
    with_prompt = BiEncoder.from_pretrained(tiny_modernbert, BiEncoderConfig(query_prompt="query: "))
    assert not np.allclose(with_prompt.encode_queries(SENTENCES), model.encode_queries(SENTENCES), atol=1e-4)


def test_matryoshka_truncation(st, minilm_path, tmp_path):
    full = BiEncoder.from_pretrained(minilm_path)
    small = BiEncoder.from_pretrained(minilm_path, BiEncoderConfig(truncate_dim=64))
    assert small.dim == 64
    v = small.encode_documents(SENTENCES)
    assert v.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    f = full.encode_documents(SENTENCES)[:, :64]
    np.testing.assert_allclose(v, f / np.linalg.norm(f, axis=1, keepdims=True), atol=1e-5)
    small.save_pretrained(tmp_path / "m")
    assert BiEncoder.from_pretrained(str(tmp_path / "m")).dim == 64
    theirs = st.SentenceTransformer(str(tmp_path / "m"), device="cpu", truncate_dim=64)
    np.testing.assert_allclose(v, theirs.encode(SENTENCES, normalize_embeddings=True), atol=2e-5)


def test_dense_layer_round_trip(st, tiny_modernbert, tmp_path):
    """A sentence-transformers model with a Dense head loads in ours and gives the same vectors."""
    src = st.SentenceTransformer(tiny_modernbert, device="cpu")
    torch.manual_seed(0)
    dim = src.get_embedding_dimension() if hasattr(src, "get_embedding_dimension") else \
        src.get_sentence_embedding_dimension()  # renamed in sentence-transformers 6
    dense = st.models.Dense(dim, 16, activation_function=torch.nn.Tanh())
    model = st.SentenceTransformer(modules=[src[0], src[1], dense, st.models.Normalize()], device="cpu")
    model.save(str(tmp_path / "st"))
    ours = BiEncoder.from_pretrained(str(tmp_path / "st"))
    assert ours.dim == 16
    np.testing.assert_allclose(ours.encode_documents(SENTENCES), model.encode(SENTENCES), atol=2e-5)
    ours.save_pretrained(tmp_path / "ours")
    back = st.SentenceTransformer(str(tmp_path / "ours"), device="cpu")
    np.testing.assert_allclose(back.encode(SENTENCES), model.encode(SENTENCES), atol=2e-5)


def test_chunked_documents_score_as_best_chunk(tiny_modernbert):
    cfg = BiEncoderConfig(chunking=ChunkingConfig(max_tokens=16, overlap=4))
    model = BiEncoder.from_pretrained(tiny_modernbert, cfg)
    long_doc = "alpha beta gamma " * 20
    chunks, owners = model.encode_chunks([long_doc, "short one"])
    assert (owners == 0).sum() > 1 and (owners == 1).sum() == 1
    scores = model.score(["alpha"], [long_doc, "short one"])
    q = model.encode_queries(["alpha"])
    assert np.isclose(scores[0, 0], (q @ chunks[owners == 0].T).max(), atol=1e-6)


def test_encode_empty_and_string(tiny_modernbert):
    model = BiEncoder.from_pretrained(tiny_modernbert)
    assert model.encode_documents([]).shape == (0, model.dim)
    assert model.encode_queries("one text").shape == (1, model.dim)


def test_pretrained_minilm_ranks_relevant_passage_first(minilm_path):
    """End to end on real pretrained weights, offline: a relevant passage outranks unrelated ones."""
    model = BiEncoder.from_pretrained(minilm_path)
    pairs = [
        ("How do I bake sourdough bread?", "Mix flour, water and starter, let the dough rise overnight, then bake it."),
        ("What causes tides in the ocean?", "Tides are caused by the gravitational pull of the moon and the sun."),
        ("python sort a list descending", "Use sorted(items, reverse=True) to get a new list in descending order."),
        ("symptoms of the flu", "Influenza often brings fever, cough, sore throat, muscle aches and fatigue."),
        ("who wrote Hamlet", "Hamlet is a tragedy written by William Shakespeare around 1600."),
    ]
    queries = [q for q, _ in pairs]
    docs = [d for _, d in pairs]
    scores = model.encode_queries(queries) @ model.encode_documents(docs).T
    assert (scores.argmax(axis=1) == np.arange(len(pairs))).all()


def test_chunking_reaches_past_max_length(minilm_path):
    """A relevant passage beyond the model's max length is found only through chunking."""
    enc = EncoderConfig(max_length=32)
    plain = BiEncoder.from_pretrained(minilm_path, BiEncoderConfig(encoder=enc))
    chunked = BiEncoder.from_pretrained(minilm_path, BiEncoderConfig(encoder=enc, chunking=ChunkingConfig(32, 8)))
    filler = "The weather report mentioned clouds, some wind and a little rain in the afternoon. " * 6
    long_doc = filler + "Paris is the capital of France."
    chunks, owners = chunked.encode_chunks([long_doc])
    n_tokens = len(chunked.encoder.tokenizer(long_doc)["input_ids"])
    assert len(chunks) >= n_tokens // 32 + 1
    query = ["What is the capital of France?"]
    assert chunked.score(query, [long_doc])[0, 0] > plain.score(query, [long_doc])[0, 0] + 0.2


WHITESPACE = ["  hello world  ", "hello world\n", "\tThe cat sits on the mat. ", "Paris is the capital of France."]


@pytest.mark.parametrize("prompt", ["query: ", "query:"])
@pytest.mark.parametrize("lower", [False, True])
def test_bpe_tokenizer_whitespace_and_case_match_sentence_transformers(st, tiny_modernbert_bpe, tmp_path, lower,
                                                                       prompt):
    """Byte-level BPE (ModernBERT's tokenizer kind) turns whitespace into tokens: like sentence-transformers
    < 6 (and PyLate), prompt + text is stripped (and lowercased when do_lower_case) before tokenizing, and
    the prompt tokens left out of pooling are those of the stripped prompt."""
    cfg = BiEncoderConfig(query_prompt=prompt, document_prompt="", include_prompt=False, do_lower_case=lower)
    model = BiEncoder.from_pretrained(tiny_modernbert_bpe, cfg, device="cpu")
    model.save_pretrained(tmp_path / "m")
    theirs = st.SentenceTransformer(str(tmp_path / "m"), device="cpu")
    assert theirs[0].do_lower_case is lower
    docs, queries = WHITESPACE, WHITESPACE
    if int(st.__version__.split(".")[0]) >= 6:
        # sentence-transformers 6 tokenizes texts as given (no strip) and measures the prompt unstripped
        # ("query: " is one token longer than "query:" in BPE): it agrees with us, by design version-independent,
        # on stripped texts, and on prompted queries only without leading whitespace or a trailing-space prompt
        docs = [t.strip() for t in WHITESPACE]
        queries = [t.strip() for t in WHITESPACE if t == t.lstrip()] if prompt == prompt.rstrip() else []
    np.testing.assert_allclose(model.encode_documents(WHITESPACE), theirs.encode(docs), atol=2e-5)
    np.testing.assert_allclose(model.encode_documents(WHITESPACE), model.encode_documents(
        [t.strip() for t in WHITESPACE]), atol=1e-6)
    if queries:
        np.testing.assert_allclose(model.encode_queries(queries), theirs.encode(queries, prompt_name="query"),
                                   atol=2e-5)
    again = BiEncoder.from_pretrained(str(tmp_path / "m"))
    assert again.config.do_lower_case is lower
    if lower:  # case no longer matters
        np.testing.assert_allclose(again.encode_documents(["HELLO World"]), again.encode_documents(["hello world"]),
                                   atol=1e-6)


def test_dense_layer_runs_in_bf16(tiny_modernbert, tmp_path):
    """Dense layers stay float32 while the transformer runs in bf16 (the GPU default)."""
    from mbert_retrieval.biencoder import _DenseBlock

    model = BiEncoder.from_pretrained(tiny_modernbert, device="cpu")
    model.dense = torch.nn.Sequential(_DenseBlock(torch.nn.Linear(model.encoder.hidden_size, 16)))
    model.save_pretrained(tmp_path / "m")
    fp32 = BiEncoder.from_pretrained(str(tmp_path / "m"), device="cpu")
    bf16 = BiEncoder.from_pretrained(str(tmp_path / "m"), device="cpu", dtype="bfloat16")
    a, b = fp32.encode_documents(SENTENCES), bf16.encode_documents(SENTENCES)
    assert b.dtype == np.float32 and b.shape == (4, 16)
    assert np.min(np.sum(a * b, axis=1)) > 0.95  # same vectors up to bf16 rounding


@pytest.mark.parametrize("mode", ["cls", ["max"]])
def test_reads_sentence_transformers_6_layout(tiny_modernbert, tmp_path, mode):
    """sentence-transformers 6 writes `pooling_mode` (a name or a list) instead of one flag per mode, and the
    maximum length as the tokenizer's model_max_length instead of sentence_bert_config.json's max_seq_length."""
    BiEncoder.from_pretrained(tiny_modernbert).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "1_Pooling" / "config.json").write_text(json.dumps(
        {"embedding_dimension": 32, "pooling_mode": mode, "include_prompt": False}))
    (tmp_path / "m" / "sentence_bert_config.json").write_text(json.dumps(
        {"transformer_task": "feature-extraction", "module_output_name": "token_embeddings"}))
    tok_cfg = tmp_path / "m" / "tokenizer_config.json"
    tok_cfg.write_text(json.dumps({**json.loads(tok_cfg.read_text()), "model_max_length": 48}))
    model = BiEncoder.from_pretrained(str(tmp_path / "m"))
    assert model.config.pooling == (mode if isinstance(mode, str) else mode[0])
    assert model.config.include_prompt is False and model.encoder.config.max_length == 48


@pytest.mark.parametrize("pooling", [{"pooling_mode": ["cls", "mean"]}, {"pooling_mode": "weightedmean"},
                                     {"pooling_mode_mean_tokens": True, "pooling_mode_weightedmean_tokens": True}])
def test_unsupported_pooling_names_the_file(tiny_modernbert, tmp_path, pooling):
    BiEncoder.from_pretrained(tiny_modernbert).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(ValueError, match="1_Pooling/config.json: pooling .* is not supported"):
        BiEncoder.from_pretrained(str(tmp_path / "m"))


# ---------------------------------------------------------------------- weights fingerprint
def test_fingerprint_follows_the_weights_not_the_path(tiny_modernbert, tmp_path):
    """Same files -> same fingerprint; other weights saved at the same path -> another one."""
    import shutil

    from safetensors.torch import load_file, save_file

    first = BiEncoder.from_pretrained(tiny_modernbert)
    assert isinstance(first.fingerprint, str)
    assert first.fingerprint == BiEncoder.from_pretrained(tiny_modernbert).fingerprint
    first.save_pretrained(tmp_path / "copy")  # same tensors, written again: same fingerprint
    assert BiEncoder.from_pretrained(str(tmp_path / "copy")).fingerprint == first.fingerprint
    shutil.copytree(tiny_modernbert, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    torch.manual_seed(1)  # re-initialised in place: same path, same names and shapes, other values
    save_file({k: torch.randn_like(v) for k, v in load_file(str(weights)).items()}, str(weights))
    assert BiEncoder.from_pretrained(str(tmp_path / "m")).fingerprint != first.fingerprint


def test_fingerprint_covers_dense_layers(tiny_modernbert, tmp_path):
    from mbert_retrieval.biencoder import _DenseBlock

    model = BiEncoder.from_pretrained(tiny_modernbert, device="cpu")
    plain = model.fingerprint
    torch.manual_seed(0)
    model.dense = torch.nn.Sequential(_DenseBlock(torch.nn.Linear(model.encoder.hidden_size, 16)))
    model.save_pretrained(tmp_path / "m")
    assert model.fingerprint == BiEncoder.from_pretrained(str(tmp_path / "m")).fingerprint != plain
    saved = model.fingerprint
    with torch.no_grad():
        model.dense[0][0].weight.mul_(2)
    model.save_pretrained(tmp_path / "m")
    assert BiEncoder.from_pretrained(str(tmp_path / "m")).fingerprint not in (plain, saved)


@pytest.mark.parametrize("sampled", [False, True])
def test_file_fingerprint_sees_every_tensor(tmp_path, monkeypatch, sampled):
    """Whole or sampled (large files), a change of any one tensor changes the fingerprint; header metadata
    and tensor order do not."""
    from safetensors.torch import save_file

    from mbert_retrieval import files

    if sampled:  # every file counts as large: only the sampled blocks of each tensor are read
        monkeypatch.setattr(files, "_FULL_HASH_BYTES", 0)
    gen = torch.Generator().manual_seed(0)
    tensors = {f"layer{i}.weight": torch.randn(64, 300, generator=gen) for i in range(4)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    base = files.file_fingerprint(path)
    save_file(dict(reversed(list(tensors.items()))), str(path), metadata={"format": "pt", "note": "re-saved"})
    assert files.file_fingerprint(path) == base
    for name in tensors:
        changed = dict(tensors)
        changed[name] = torch.randn(64, 300, generator=gen)
        save_file(changed, str(path))
        assert files.file_fingerprint(path) != base, name
    bin_path = tmp_path / "pytorch_model.bin"
    bin_path.write_bytes(b"x" * 50_000)
    other = files.file_fingerprint(bin_path)
    bin_path.write_bytes(b"y" * 50_000)
    assert files.file_fingerprint(bin_path) != other
