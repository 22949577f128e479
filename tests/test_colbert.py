"""ColBERT: PyLate parity (format and outputs), query expansion, markers, skiplist, save/load, chunking."""

from __future__ import annotations

import ast
import copy
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import mbert_retrieval.colbert as colbert_module
from mbert_retrieval.chunking import ChunkingConfig
from mbert_retrieval.colbert import ColBERT, ColBERTConfig
from mbert_retrieval.encoder import EncoderConfig

QUERIES = ["What is the capital of France?", "  who wrote hamlet  ", "long query " * 30]
DOCS = [
    "Paris is the capital and largest city of France. It's on the Seine!",
    "Hamlet (a tragedy) was written by William Shakespeare, c. 1600.",
    "filler text, " * 120,  # longer than document_length: truncated
    "",
]


def _pylate():
    try:
        import pylate.models  # noqa: F401
        import pylate.scores  # noqa: F401
    except Exception as err:  # pylate is optional: installed with --no-deps, may be missing or broken
        pytest.skip(f"pylate is not importable ({type(err).__name__}: {err}); parity tests need pylate 1.6")
    import pylate

    return pylate


def _variant(model: ColBERT, **changes) -> ColBERT:
    """A view of `model` with other settings (shares the weights; settings only act at tokenisation)."""
    other = copy.copy(model)
    other.config = replace(model.config, **changes)
    if "skiplist_words" in changes:
        ids = [model.encoder.tokenizer.convert_tokens_to_ids(w) for w in changes["skiplist_words"]]
        other.skiplist_ids = torch.tensor(sorted(set(ids)), dtype=torch.long)
    return other


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def pylate_dir(tmp_path_factory, minilm_path) -> str:
    """A ColBERT built by PyLate itself on all-MiniLM-L6-v2 (random seeded projection), saved by PyLate."""
    pylate = _pylate()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pylate_colbert")
    pylate.models.ColBERT(minilm_path, device="cpu").save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="session")
def ours_minilm_dir(tmp_path_factory, minilm_path) -> str:
    """A ColBERT built by us on all-MiniLM-L6-v2 and saved by our save_pretrained."""
    path = tmp_path_factory.mktemp("our_colbert")
    ColBERT.from_pretrained(minilm_path, device="cpu", seed=3).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_colbert(tiny_modernbert) -> ColBERT:
    return ColBERT.from_pretrained(tiny_modernbert, device="cpu", query_length=16, document_length=32)


# ---------------------------------------------------------------------- PyLate parity
def _assert_parity(pylate, ours: ColBERT, theirs) -> None:
    for is_query, texts in ((True, QUERIES), (False, DOCS)):
        expected = theirs.encode(texts, is_query=is_query, show_progress_bar=False)
        got = ours.encode_queries(texts) if is_query else ours.encode_documents(texts)
        assert len(got) == len(expected)
        for e, g in zip(expected, got):
            assert g.dtype == np.float32 and g.shape == e.shape
            np.testing.assert_allclose(g, e, atol=1e-5)
    q = theirs.encode(QUERIES, is_query=True, show_progress_bar=False)
    d = theirs.encode(DOCS, is_query=False, show_progress_bar=False)
    # one document per call: PyLate's torch path multiplies padded document positions by 0 instead of
    # excluding them, so a padded short document would score max(0, best) per query token (a PyLate quirk)
    q_pad = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(x) for x in q], batch_first=True)
    q_mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(x)) for x in q], batch_first=True)
    expected_scores = torch.cat([pylate.scores.colbert_scores(q_pad, torch.from_numpy(x)[None], queries_mask=q_mask,
                                                              backend="torch") for x in d], dim=1)
    np.testing.assert_allclose(ours.score(QUERIES, DOCS), expected_scores.numpy(), atol=1e-4)


@pytest.mark.parametrize("source", ["pylate", "ours"])
def test_pylate_parity(source, pylate_dir, ours_minilm_dir):
    pylate = _pylate()
    path = pylate_dir if source == "pylate" else ours_minilm_dir
    theirs = pylate.models.ColBERT(path, device="cpu")
    ours = ColBERT.from_pretrained(path, device="cpu")
    assert ours.dim == 128 and ours.query_prefix_id == theirs.query_prefix_id
    assert ours.document_prefix_id == theirs.document_prefix_id
    assert sorted(set(theirs.skiplist)) == ours.skiplist_ids.tolist()
    _assert_parity(pylate, ours, theirs)

    # the other attention/expansion settings PyLate has, on the same weights
    for changes in ({"attend_to_expansion_tokens": True}, {"do_query_expansion": False}):
        for key, value in changes.items():
            setattr(theirs, key, value)
        _assert_parity(pylate, _variant(ours, **changes), theirs)
        theirs.attend_to_expansion_tokens, theirs.do_query_expansion = False, True


def test_pylate_loads_our_modernbert_dir(tmp_path, tiny_colbert):
    """Our save of a ModernBERT ColBERT (sliding-window layers, queries longer than the window) loads in PyLate."""
    pylate = _pylate()
    tiny_colbert.save_pretrained(tmp_path)
    theirs = pylate.models.ColBERT(str(tmp_path), device="cpu")
    assert theirs.query_length == 16 and theirs.document_length == 32
    _assert_parity(pylate, tiny_colbert, theirs)


# ---------------------------------------------------------------------- format and loading
def test_saved_directory_is_pylate_format(ours_minilm_dir):
    root = Path(ours_minilm_dir)
    modules = json.loads((root / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.models.Transformer", "pylate.models.Dense.Dense"]
    assert json.loads((root / "1_Dense" / "config.json").read_text())["out_features"] == 128
    cfg = json.loads((root / "config_sentence_transformers.json").read_text())
    assert cfg["query_prefix"] == "[Q] " and cfg["document_length"] == 180 and cfg["do_query_expansion"] is True
    assert (root / "model.safetensors").is_file() and (root / "1_Dense" / "model.safetensors").is_file()
    assert not list(root.rglob("*.bin")) and not list(root.rglob("*.pt"))  # no pickle anywhere


def test_save_load_round_trip(tmp_path, tiny_colbert):
    tiny_colbert.save_pretrained(tmp_path)
    again = ColBERT.from_pretrained(str(tmp_path), device="cpu")
    assert again.config.query_length == 16 and again.config.document_length == 32 and again.dim == 128
    for a, b in zip(tiny_colbert.encode_queries(QUERIES) + tiny_colbert.encode_documents(DOCS),
                    again.encode_queries(QUERIES) + again.encode_documents(DOCS)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # an explicit config wins over the checkpoint's settings; keyword overrides set single fields
    explicit = ColBERT.from_pretrained(str(tmp_path), ColBERTConfig(query_length=8, encoder=EncoderConfig(device="cpu")))
    assert explicit.config.query_length == 8 and explicit.config.document_length == 180
    assert ColBERT.from_pretrained(str(tmp_path), device="cpu", query_length=24).config.document_length == 32
    with pytest.raises(TypeError):
        ColBERT.from_pretrained(str(tmp_path), no_such_setting=1)


def test_new_dim_on_checkpoint_adds_projection(tmp_path, tiny_colbert):
    tiny_colbert.save_pretrained(tmp_path)
    model = ColBERT.from_pretrained(str(tmp_path), device="cpu", dim=48)
    assert model.dim == 48 and len(model.projection) == 2
    assert model.encode_queries(["q"])[0].shape == (16, 48)


def test_dense_bin_loaded_weights_only(tmp_path, tiny_colbert, monkeypatch):
    """A checkpoint with 1_Dense/pytorch_model.bin loads through torch.load(..., weights_only=True) only."""
    tiny_colbert.save_pretrained(tmp_path)
    dense = tmp_path / "1_Dense"
    state = {"linear.weight": tiny_colbert.projection[0].linear.weight.detach().clone()}
    torch.save(state, dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        assert kwargs.get("weights_only") is True, "torch.load called without weights_only=True"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = ColBERT.from_pretrained(str(tmp_path), device="cpu")
    assert calls and all(calls)
    torch.testing.assert_close(model.projection[0].linear.weight, state["linear.weight"])


def test_torch_load_always_weights_only():
    """Static check over the whole package: every torch.load call passes weights_only=True."""
    package = Path(colbert_module.__file__).parent
    offenders = []
    for file in package.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in node.keywords)
                if not ok:
                    offenders.append(f"{file.relative_to(package)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


# ---------------------------------------------------------------------- building from a plain encoder
def test_build_from_plain_encoder(tiny_modernbert, caplog):
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(tiny_modernbert).vocab_size
    rng_before = torch.random.get_rng_state()
    with caplog.at_level("WARNING", logger="mbert_retrieval.colbert"):
        model = ColBERT.from_pretrained(tiny_modernbert, device="cpu")
    assert "untrained" in caplog.text
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # seeded in a forked RNG
    assert model.kind == "colbert" and model.dim == 128 and model.model_id == tiny_modernbert
    assert model.projection[0].linear.bias is None and model.projection[0].linear.in_features == 32
    tok = model.encoder.tokenizer
    assert model.query_prefix_id == vocab and model.document_prefix_id == vocab + 1
    # the added token itself (transformers >= 5.2x shows added tokens normalised, "[q] ", in convert_ids_to_tokens)
    assert tok.added_tokens_decoder[model.query_prefix_id].content == "[Q] "
    assert tok.added_tokens_decoder[model.document_prefix_id].content == "[D] "
    assert model.encoder.model.get_input_embeddings().num_embeddings == vocab + 2
    again = ColBERT.from_pretrained(tiny_modernbert, device="cpu")
    torch.testing.assert_close(again.projection[0].linear.weight, model.projection[0].linear.weight)
    other_seed = ColBERT.from_pretrained(tiny_modernbert, device="cpu", seed=7)
    assert not torch.equal(other_seed.projection[0].linear.weight, model.projection[0].linear.weight)


@pytest.mark.parametrize("dim", [16, 96])
def test_build_other_dims(tiny_modernbert, dim):
    model = ColBERT.from_pretrained(tiny_modernbert, ColBERTConfig(dim=dim, encoder=EncoderConfig(device="cpu")))
    assert model.dim == dim
    assert model.encode_queries(["q"])[0].shape == (32, dim)
    assert model.encode_documents(["a doc"])[0].shape[1] == dim


# ---------------------------------------------------------------------- behaviour
def test_markers_and_query_expansion(tiny_colbert):
    ids, real = tiny_colbert.tokenize_queries(["short", "long " * 50])
    tok = tiny_colbert.encoder.tokenizer
    assert all(len(s) == 16 for s in ids)
    assert all(s[0] == tok.cls_token_id and s[1] == tiny_colbert.query_prefix_id for s in ids)
    assert ids[0][real[0]:] == [tok.mask_token_id] * (16 - real[0]) and ids[0][real[0] - 1] == tok.sep_token_id
    assert real[1] == 16 and ids[1][-1] == tok.sep_token_id  # truncated, no expansion left
    doc = tiny_colbert.tokenize_documents(["word " * 100])[0]
    assert len(doc) == 32 and doc[1] == tiny_colbert.document_prefix_id and doc[-1] == tok.sep_token_id
    assert tiny_colbert.tokenize_documents(["  Mixed  "]) == tiny_colbert.tokenize_documents(["Mixed"])  # stripped

    q = tiny_colbert.encode_queries(["short", "long " * 50])
    assert [x.shape for x in q] == [(16, 128), (16, 128)]
    no_exp = _variant(tiny_colbert, do_query_expansion=False)
    ids_ne, real_ne = no_exp.tokenize_queries(["short"])
    assert real_ne is None and len(ids_ne[0]) == real[0]
    q_ne = no_exp.encode_queries(["short"])[0]
    assert q_ne.shape == (real[0], 128)
    # real tokens never attend to expansion tokens: their vectors equal the unexpanded query's
    np.testing.assert_allclose(q[0][: real[0]], q_ne, atol=1e-5)
    attend = _variant(tiny_colbert, attend_to_expansion_tokens=True).encode_queries(["short"])[0]
    assert attend.shape == (16, 128) and not np.allclose(attend[: real[0]], q_ne, atol=1e-4)


def test_skiplist_and_normalisation(tiny_colbert):
    text = "Hello, world! (a) test; end."
    ids = tiny_colbert.tokenize_documents([text])[0]
    skip = set(tiny_colbert.skiplist_ids.tolist())
    n_punct = sum(t in skip for t in ids)
    assert n_punct >= 5
    vecs = tiny_colbert.encode_documents([text])[0]
    assert vecs.shape == (len(ids) - n_punct, 128)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    full = _variant(tiny_colbert, skiplist_words=[]).encode_documents([text])[0]
    assert full.shape[0] == len(ids)  # punctuation is still read by the encoder, only dropped from the output
    np.testing.assert_allclose(full[[t not in skip for t in ids]], vecs, atol=1e-6)
    raw = _variant(tiny_colbert, normalize=False).encode_queries(["q"])[0]
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_forward_matches_encode_and_has_gradients(tiny_colbert):
    q, qm = tiny_colbert.forward_queries(QUERIES[:2])
    d, dm = tiny_colbert.forward_documents(DOCS[:3])
    assert q.shape == (2, 16, 128) and qm.all() and q.requires_grad
    enc_d = tiny_colbert.encode_documents(DOCS[:3])
    assert dm.sum(1).tolist() == [len(x) for x in enc_d]
    for i, x in enumerate(enc_d):
        np.testing.assert_allclose(d[i, : len(x)].detach().numpy(), x, atol=1e-5)
    np.testing.assert_allclose(q.detach().numpy(), np.stack(tiny_colbert.encode_queries(QUERIES[:2])), atol=1e-5)
    from mbert_retrieval.maxsim import maxsim

    maxsim(q, d, qm, dm).sum().backward()
    tiny_colbert.train()
    tiny_colbert.encode_queries(["q"])  # encoding runs in eval mode and restores the caller's mode
    assert tiny_colbert.training and tiny_colbert.encoder.model.training
    tiny_colbert.eval()
    assert tiny_colbert.projection[0].linear.weight.grad is not None
    assert next(tiny_colbert.encoder.model.parameters()).grad is not None
    tiny_colbert.zero_grad(set_to_none=True)


def test_score_and_rerank(tiny_colbert):
    scores = tiny_colbert.score(QUERIES, DOCS)
    assert scores.shape == (3, 4) and scores.dtype == np.float32
    q, d = tiny_colbert.encode_queries(QUERIES), tiny_colbert.encode_documents(DOCS)
    np.testing.assert_allclose(tiny_colbert.score(q, d), scores, atol=1e-5)
    manual = sum((q[0] @ d[1].T).max(axis=1))
    assert np.isclose(scores[0, 1], manual, atol=1e-4)
    ranked = tiny_colbert.rerank(QUERIES[0], DOCS, k=2)
    order = np.argsort(-scores[0])[:2]
    assert [i for i, _ in ranked] == order.tolist()
    np.testing.assert_allclose([s for _, s in ranked], scores[0, order], atol=1e-5)


def test_chunked_documents(tiny_colbert):
    long_doc = " ".join(f"word{i}" for i in range(200))
    short = "a short document."
    chunking = ChunkingConfig(max_tokens=32, overlap=8)
    plain = tiny_colbert.encode_documents([long_doc, short])
    chunked = tiny_colbert.encode_documents([long_doc, short], chunking=chunking)
    np.testing.assert_allclose(chunked[1], plain[1], atol=1e-6)  # fits in one window: unchanged
    assert chunked[0].shape[0] > 3 * plain[0].shape[0]  # the whole document, not just its first 32 tokens
    # the first window is exactly the truncated document
    np.testing.assert_allclose(chunked[0][: plain[0].shape[0]], plain[0], atol=1e-5)
    # score / rerank: a document scores as its best chunk (max-pooled chunk MaxSim scores)
    chunks, owners = tiny_colbert.encode_document_chunks([short, long_doc], chunking)
    assert owners.tolist()[0] == 0 and set(owners.tolist()) == {0, 1} and len(chunks) > 4
    q = tiny_colbert.encode_queries(["word190 word199"])
    per_chunk = tiny_colbert.score(q, chunks)[0]
    s = tiny_colbert.score(["word190 word199"], [short, long_doc], chunking=chunking)
    np.testing.assert_allclose(s[0], [per_chunk[owners == 0].max(), per_chunk[owners == 1].max()], atol=1e-5)
    assert [i for i, _ in tiny_colbert.rerank("word190 word199", [short, long_doc], chunking=chunking)] == \
        np.argsort(-s[0], kind="stable").tolist()
    # chunking in the config: the same as passing it
    from dataclasses import replace

    configured = replace(tiny_colbert.config, chunking=chunking)
    tiny_colbert.config, saved = configured, tiny_colbert.config
    try:
        again = tiny_colbert.encode_documents([long_doc, short])
        np.testing.assert_allclose(again[0], chunked[0], atol=1e-6)
        np.testing.assert_allclose(tiny_colbert.score(["word190 word199"], [short, long_doc]), s, atol=1e-6)
    finally:
        tiny_colbert.config = saved
    with pytest.raises(ValueError):
        tiny_colbert.encode_documents([long_doc], chunking=ChunkingConfig(max_tokens=4096, overlap=8))


def test_bad_inputs(tiny_colbert):
    with pytest.raises(TypeError):
        tiny_colbert.encode_queries("not a list")
    assert tiny_colbert.encode_documents([]) == []
    assert tiny_colbert.score([], DOCS).shape == (0, 4)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


# ---------------------------------------------------------------------- weights fingerprint
def test_fingerprint_of_new_weights_and_after_save(tiny_modernbert, tmp_path):
    """A projection made at load is part of the fingerprint (another seed or torch initialisation -> another
    fingerprint); once saved, the model is its files, and reloading them gives the same fingerprint."""
    model = ColBERT.from_pretrained(tiny_modernbert, device="cpu", dim=16)
    assert model.new_weights and isinstance(model.fingerprint, str)
    assert ColBERT.from_pretrained(tiny_modernbert, device="cpu", dim=16).fingerprint == model.fingerprint
    assert ColBERT.from_pretrained(tiny_modernbert, device="cpu", dim=16, seed=7).fingerprint != model.fingerprint
    model.save_pretrained(tmp_path / "m")
    assert not model.new_weights
    again = ColBERT.from_pretrained(str(tmp_path / "m"), device="cpu")
    assert not again.new_weights and again.fingerprint == model.fingerprint
    with torch.no_grad():
        again.projection[0].linear.weight.mul_(-1)
    again.save_pretrained(tmp_path / "m")  # other weights at the same path
    assert ColBERT.from_pretrained(str(tmp_path / "m"), device="cpu").fingerprint != model.fingerprint


# ---------------------------------------------------------------------- an index built on a plain encoder
def test_index_on_plain_encoder_keeps_its_projection(tiny_modernbert, tmp_path, monkeypatch, caplog):
    """The random projection is saved with the index at build (warned about once, then): reopening uses it,
    even if torch's initialisation changes (simulated by another seed) or the encoder is named again."""
    from contextlib import contextmanager

    from mbert_retrieval.index import IndexManifest
    from mbert_retrieval.retriever import MODEL_DIRNAME, Retriever, read_sidecar

    docs = [{"id": str(i), "text": t} for i, t in enumerate(DOCS)]
    with caplog.at_level("WARNING", logger="mbert_retrieval.colbert"):
        built = Retriever.build(tmp_path / "idx", docs, model=tiny_modernbert, kind="colbert",
                                model_options={"device": "cpu"})
    assert "untrained" in caplog.text
    expected = built.model.encode_queries(QUERIES)
    hits = [[h.id for h in row] for row in built.search(QUERIES, k=3)]
    built.close()
    assert (tmp_path / "idx" / MODEL_DIRNAME / "modules.json").is_file()
    assert read_sidecar(tmp_path / "idx")["model_saved"] is True
    manifest = IndexManifest.load(tmp_path / "idx")

    real_seeded = colbert_module._seeded

    @contextmanager
    def other_init(seed):  # as if torch initialised new layers differently
        with real_seeded(seed + 1):
            yield

    monkeypatch.setattr(colbert_module, "_seeded", other_init)
    caplog.clear()
    with caplog.at_level("WARNING", logger="mbert_retrieval.colbert"):
        for model in (None, tiny_modernbert):
            with Retriever.open(tmp_path / "idx", model=model, model_options={"device": "cpu"}) as r:
                assert r.model.model_id == tiny_modernbert and not r.model.new_weights
                assert r.model.fingerprint == manifest.model_fingerprint
                for a, b in zip(r.model.encode_queries(QUERIES), expected):
                    np.testing.assert_allclose(a, b, atol=1e-6)
                assert [[h.id for h in row] for row in r.search(QUERIES, k=3)] == hits
    assert "untrained" not in caplog.text


def test_index_with_saved_projection_missing_is_an_error(tiny_modernbert, tmp_path):
    import shutil

    from mbert_retrieval.retriever import MODEL_DIRNAME, Retriever

    Retriever.build(tmp_path / "idx", ["one doc", "another doc"], model=tiny_modernbert, kind="colbert",
                    model_options={"device": "cpu"}).close()
    shutil.rmtree(tmp_path / "idx" / MODEL_DIRNAME)
    with pytest.raises(FileNotFoundError, match="restore it, or rebuild"):
        Retriever.open(tmp_path / "idx")


@pytest.mark.parametrize("override", [{"document_length": None}, {"query_length": 0}, {"document_length": "180"}])
def test_bad_lengths_refused_when_loading(tmp_path, tiny_colbert, override):
    """A None / zero / string length was accepted and failed later, mid-encode, with a TypeError."""
    tiny_colbert.save_pretrained(tmp_path / "m")
    name = next(iter(override))
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        ColBERT.from_pretrained(str(tmp_path / "m"), **override)
