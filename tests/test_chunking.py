"""Chunking helpers shared by the bi-encoder and ColBERT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbert_retrieval.chunking import (ChunkingConfig, chunk_token_ids, concat_chunk_vectors, max_pool_chunk_scores,
                                      special_token_layout, split_into_chunks, tokenize_untruncated)

CLS, SEP, MARK = 101, 102, 7


def _doc(n_body: int, marker: bool = False) -> list[int]:
    return [CLS] + ([MARK] if marker else []) + list(range(1000, 1000 + n_body)) + [SEP]


def test_short_sequence_is_one_identical_chunk():
    seq = _doc(5)
    assert chunk_token_ids(seq, max_len=16, overlap=4) == [seq]
    assert chunk_token_ids(seq, max_len=len(seq), overlap=2) == [seq]


def test_windows_keep_specials_overlap_and_cover_everything():
    seq = _doc(50, marker=True)
    chunks = chunk_token_ids(seq, max_len=16, overlap=4, keep_prefix=2, keep_suffix=1)
    body_len = 16 - 3
    assert all(len(c) <= 16 for c in chunks)
    assert all(c[:2] == [CLS, MARK] and c[-1] == SEP for c in chunks)
    bodies = [c[2:-1] for c in chunks]
    assert all(len(b) == body_len for b in bodies[:-1])
    for a, b in zip(bodies, bodies[1:]):
        assert a[-4:] == b[:4]  # consecutive windows share `overlap` tokens
    covered = [t for b in bodies for t in b]
    assert sorted(set(covered)) == seq[2:-1]
    assert bodies[-1][-1] == seq[-2]  # the last window reaches the end
    # the first window is what truncation to max_len would give
    assert chunks[0] == seq[: 16 - 1] + [SEP]


def test_no_overlap_partitions_the_body():
    seq = _doc(30)
    chunks = chunk_token_ids(seq, max_len=12, overlap=0)
    assert [t for c in chunks for t in c[1:-1]] == seq[1:-1]
    assert len(chunks) == 3  # 30 body tokens in windows of 10


def test_invalid_windows_raise():
    with pytest.raises(ValueError):
        chunk_token_ids(_doc(30), max_len=6, overlap=4, keep_prefix=1, keep_suffix=1)
    with pytest.raises(ValueError):
        chunk_token_ids(_doc(30), max_len=10, overlap=-1)
    with pytest.raises(ValueError):
        ChunkingConfig(max_tokens=16, overlap=8)


def test_split_into_chunks_owners_in_order():
    docs = [_doc(3), _doc(40), _doc(1)]
    chunks, owners = split_into_chunks(docs, max_len=16, overlap=4)
    assert owners[0] == 0 and owners[-1] == 2
    assert owners == sorted(owners)
    assert chunks[0] == docs[0] and chunks[-1] == docs[2]
    assert chunks[1 : len(chunks) - 1] == chunk_token_ids(docs[1], 16, 4)


def test_max_pool_numpy_and_torch():
    scores = np.array([[1.0, 5.0, 2.0, 0.5], [3.0, -1.0, 4.0, 7.0]], dtype=np.float32)
    owners = [0, 0, 1, 2]
    out = max_pool_chunk_scores(scores, owners, 4)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_array_equal(out[:, :3], [[5.0, 2.0, 0.5], [3.0, 4.0, 7.0]])
    assert np.isneginf(out[:, 3]).all()  # a document without chunks
    assert max_pool_chunk_scores(scores, owners).shape == (2, 3)  # n_documents defaults to max owner + 1
    np.testing.assert_array_equal(max_pool_chunk_scores(scores[0], owners), [5.0, 2.0, 0.5])

    t = torch.tensor(scores, requires_grad=True)
    pooled = max_pool_chunk_scores(t, torch.tensor(owners))
    assert isinstance(pooled, torch.Tensor)
    pooled.sum().backward()  # gradient reaches the best chunk of every document only
    np.testing.assert_array_equal(t.grad.numpy(), [[0, 1, 1, 1], [1, 0, 1, 1]])
    with pytest.raises(ValueError):
        max_pool_chunk_scores(scores, [0, 1])


def test_concat_chunk_vectors():
    vecs = [np.full((2, 3), i, dtype=np.float32) for i in range(4)]
    out = concat_chunk_vectors(vecs, [0, 1, 1, 2])
    assert [o.shape[0] for o in out] == [2, 4, 2]
    np.testing.assert_array_equal(out[1][:, 0], [1, 1, 2, 2])
    tout = concat_chunk_vectors([torch.from_numpy(v) for v in vecs], [0, 0, 0, 1])
    assert isinstance(tout[0], torch.Tensor) and tout[0].shape == (6, 3)
    with pytest.raises(ValueError):
        concat_chunk_vectors(vecs, [0, 0, 2, 2])  # document 1 has no chunk


def test_tokenizer_helpers(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    assert special_token_layout(tok) == (1, 1)
    long_text = "word " * 2000
    ids = tokenize_untruncated(tok, [long_text, "short"])
    assert len(ids[0]) == 2002 and ids[0][0] == tok.cls_token_id and ids[0][-1] == tok.sep_token_id
    assert ids[1] == tok("short")["input_ids"]
