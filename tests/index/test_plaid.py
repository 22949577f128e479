import numpy as np
import pytest
import torch

from mbert_retrieval.index.errors import IndexStateError
from mbert_retrieval.index.plaid import PlaidConfig, PlaidIndex, ResidualCodec, default_n_centroids
from mbert_retrieval.index.vectors import VectorStore
from mbert_retrieval.maxsim import maxsim_rank

from .conftest import clustered_tokens

DIM = 32


@pytest.fixture(scope="module")
def corpus():
    docs = clustered_tokens(300, DIM, seed=3)
    rng = np.random.default_rng(4)
    queries = []
    for d in rng.choice(len(docs), 40, replace=False):
        q = docs[d][rng.choice(len(docs[d]), 6, replace=False)] + 0.15 * rng.standard_normal((6, DIM)).astype(np.float32)
        queries.append((q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32))
    exact = [maxsim_rank(q, docs, k=10) for q in queries]
    return docs, queries, [o for o, _ in exact], [s for _, s in exact]


def _flat(docs):
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return np.concatenate(docs), offsets


def _build(tmp_path, docs, **cfg):
    vectors, offsets = _flat(docs)
    iids = np.arange(len(docs), dtype=np.int64)
    store = VectorStore(tmp_path, "colbert", DIM)
    store.register(store.write_chunk(0, iids, vectors, offsets))
    index = PlaidIndex(DIM, PlaidConfig(**cfg), store)
    index.train(store.sample(100_000), len(vectors))
    index.add(iids, vectors, offsets)
    return index


def test_default_n_centroids():
    assert default_n_centroids(10_000, 10_000) == 2048  # 32 * 100 = 3200 -> 2^11
    assert default_n_centroids(1_000_000, 10**6) == 16384  # 32000 -> 2^14
    assert default_n_centroids(10**12, 10**9) == 2**18
    assert default_n_centroids(10_000, 300) == 300


@pytest.mark.parametrize("nbits", [2, 4])
def test_codec_pack_roundtrip_and_error(corpus, nbits):
    docs, *_ = corpus
    x, _ = _flat(docs)
    codec = ResidualCodec.train(x, 64, nbits, niter=10)
    buckets = np.random.default_rng(0).integers(0, 2**nbits, size=(5, DIM)).astype(np.uint8)
    packed = codec.pack(buckets)
    assert packed.shape == (5, DIM * nbits // 8)
    np.testing.assert_array_equal(codec.unpack(packed), buckets)
    codes, packed = codec.compress(x)
    cos = np.sum(codec.decompress(codes, packed) * x, axis=1)
    centroid_only = np.sum(codec.centroids[codes] * x, axis=1)
    assert cos.mean() > centroid_only.mean() + 0.02  # residuals help
    assert cos.mean() > (0.93 if nbits == 2 else 0.97)
    assert np.all(codec.cutoffs[:, 1:] >= codec.cutoffs[:, :-1])


def test_lloyd_max_buckets_and_per_token_scale_lower_the_error():
    """Residual norms that vary between tokens (as real ones do): Lloyd-Max buckets beat the quantile ones, and
    quantizing each residual's direction with a float16 scale per token beats one set of buckets for all."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((16, DIM)).astype(np.float32)
    noise = rng.standard_normal((6000, DIM)).astype(np.float32) * rng.lognormal(-1.5, 0.6, (6000, 1)).astype(np.float32)
    x = centres[rng.integers(0, 16, 6000)] + noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    def error(codec):
        codes, rows = codec.compress(x)
        assert rows.shape == (len(x), codec.row_bytes)
        return float(np.mean(1 - np.sum(codec.decompress(codes, rows) * x, axis=1)))

    scaled = ResidualCodec.train(x, 16, 2, niter=10)
    assert scaled.scaled and scaled.row_bytes == DIM * 2 // 8 + 2
    plain = ResidualCodec.train(x, 16, 2, niter=10, scaled=False)
    quantile = ResidualCodec(plain.centroids, plain.cutoffs, plain.weights, 2)
    quantile.fit_buckets(x, lloyd_iters=1)  # the previous release: quantile cutoffs, mean weights
    residuals = x - plain.centroids[plain.assign(x)]
    np.testing.assert_allclose(quantile.cutoffs, np.quantile(residuals, [0.25, 0.5, 0.75], axis=0).T, rtol=1e-5, atol=1e-6)
    assert error(scaled) < 0.9 * error(plain), (error(scaled), error(plain))
    assert error(plain) < 0.95 * error(quantile), (error(plain), error(quantile))


def test_product_quantizer_beats_buckets_and_round_trips(tmp_path):
    """Same bytes a token: 256 codewords per 4 dimensions (2-bit) decode closer than the grid of 4 x 4 levels
    when the dimensions are correlated, as real residuals are; the codec file reads back the same codec."""
    from mbert_retrieval.index.storage import load_arrays, read_metadata, save_arrays

    rng = np.random.default_rng(6)
    centres = rng.standard_normal((16, DIM)).astype(np.float32)
    mix = rng.standard_normal((DIM, DIM)).astype(np.float32) / np.sqrt(DIM)  # correlated residual dimensions
    x = centres[rng.integers(0, 16, 12000)] + 0.3 * rng.standard_normal((12000, DIM)).astype(np.float32) @ mix
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    train, test = x[:10000], x[10000:]

    def error(codec):
        codes, rows = codec.compress(test)
        assert rows.shape == (len(test), codec.row_bytes)
        return float(np.mean(1 - np.sum(codec.decompress(codes, rows) * test, axis=1)))

    product = ResidualCodec.train(train, 16, 2, niter=10)
    scalar = ResidualCodec.train(train, 16, 2, niter=10, quantizer="scalar")
    assert product.quantizer == "product" and scalar.quantizer == "scalar" and product.row_bytes == scalar.row_bytes
    assert error(product) < 0.9 * error(scalar), (error(product), error(scalar))
    assert ResidualCodec.train(train[:9000], 16, 2).quantizer == "scalar"  # too few tokens to fit 256 codewords
    save_arrays(tmp_path / "codec.safetensors", product.arrays(), metadata=product.metadata())
    again = ResidualCodec.from_arrays(lambda names: load_arrays(tmp_path / "codec.safetensors", names),
                                      read_metadata(tmp_path / "codec.safetensors"), 2)  # fmt: skip
    assert again.quantizer == "product"
    np.testing.assert_array_equal(again.compress(test)[1], product.compress(test)[1])


def test_trained_centroids_are_stored_as_float16_and_older_float32_ones_stay_exact(tmp_path, corpus):
    """A trained codec keeps float16-exact centroids (residuals are taken from them) and its file stores them as
    float16; a codec whose centroids are not float16-exact (an index written before) keeps float32 in the file."""
    from mbert_retrieval.index.storage import load_arrays, read_metadata, save_arrays

    docs, *_ = corpus
    tokens = np.concatenate(docs)
    trained = ResidualCodec.train(tokens, 32, 2, niter=2)

    def round_trip(codec, name):
        save_arrays(tmp_path / name, codec.arrays(), metadata=codec.metadata())
        assert load_arrays(tmp_path / name, ["centroids"])["centroids"].dtype == (np.float16 if name == "new" else np.float32)
        return ResidualCodec.from_arrays(lambda names: load_arrays(tmp_path / name, names), read_metadata(tmp_path / name), 2)

    again = round_trip(trained, "new")
    assert again.centroids.dtype == np.float32
    np.testing.assert_array_equal(again.centroids, trained.centroids)
    np.testing.assert_array_equal(again.compress(tokens)[1], trained.compress(tokens)[1])
    older = ResidualCodec(trained.centroids + np.float32(1e-6), trained.cutoffs, trained.weights, 2, trained.scaled, trained.codebooks)
    np.testing.assert_array_equal(round_trip(older, "old").centroids, older.centroids)


def test_assign_scores_a_bounded_block_whatever_the_centroid_count(monkeypatch):
    """Nearest-centroid assignment scored 65,536 tokens against every centroid at once: 2 GB at 16,384."""
    from mbert_retrieval.index import codec as codec_module

    def codec_of(centroids):
        return ResidualCodec(centroids, np.zeros((DIM, 3), np.float32), np.zeros((DIM, 4), np.float32), 2)

    for n_centroids in (16, 2048, 16384, 1 << 18):
        rows = codec_of(np.zeros((n_centroids, DIM), np.float32)).assign_block_rows()
        assert rows * n_centroids <= max(codec_module._SCORE_BLOCK, 256 * n_centroids)
    x = np.random.default_rng(7).standard_normal((1024, DIM)).astype(np.float32)
    codec = codec_of(x / np.linalg.norm(x, axis=1, keepdims=True))
    monkeypatch.setattr(codec_module, "_SCORE_BLOCK", 256 * 1024)  # 256 tokens a block: 4 blocks
    assert codec.assign_block_rows() == 256
    np.testing.assert_array_equal(codec.assign(x), np.arange(1024))  # each centroid is its own nearest


def test_65536_centroids_keep_uint16_codes(corpus):
    docs, *_ = corpus
    index = PlaidIndex(DIM)
    for n_centroids, dtype in [(65536, np.uint16), (65537, np.int32)]:
        codec = ResidualCodec(np.zeros((n_centroids, DIM), np.float32), np.zeros((DIM, 3), np.float32), np.zeros((DIM, 4), np.float32), 2)
        index._codes = np.zeros(0, np.uint16)
        index._set_codec(codec)
        assert index._codes.dtype == dtype


def test_codec_written_before_the_scale_opens_unscaled(tmp_path, corpus):
    """A template file without the `residual_scale` flag (written by the previous release) is read as an
    unscaled codec, and the segments it goes with (rows of packed buckets only) search as before."""
    from mbert_retrieval.index.storage import load_arrays, save_arrays

    docs, queries, _, _ = corpus
    old = _build(tmp_path / "a", docs, nbits=2, nprobe=8, residual_scale=False, residual_quantizer="scalar")
    scores, ids = old.search(queries, 5)
    template, segment = tmp_path / "codec.safetensors", tmp_path / "seg.safetensors"
    old.save_template(template)
    save_arrays(template, load_arrays(template), metadata={"nbits": "2"})  # the previous release's metadata
    old.save_segment(segment)
    reopened = PlaidIndex(DIM, PlaidConfig(nbits=2, nprobe=8), old.store)  # new default config: scaled codecs
    reopened.load_template(template, {})
    reopened.load_segment(segment)
    assert not reopened.codec.scaled and reopened._residuals.shape[1] == DIM * 2 // 8
    again_scores, again_ids = reopened.search(queries, 5)
    np.testing.assert_array_equal(again_ids, ids)
    np.testing.assert_allclose(again_scores, scores, rtol=1e-6)


def test_ranking_agrees_with_exact_maxsim(tmp_path, corpus):
    docs, queries, exact, _ = corpus
    overlap = {}
    for nbits, min_top1, min_top10 in [(2, 0.85, 0.6), (4, 0.9, 0.75)]:
        index = _build(tmp_path / str(nbits), docs, nbits=nbits, nprobe=8)
        _, ids = index.search(queries, 10)
        top1 = np.mean([i[0] == e[0] for i, e in zip(ids, exact)])
        overlap[nbits] = np.mean([len(set(i) & set(e)) / 10 for i, e in zip(ids, exact)])
        assert top1 >= min_top1 and overlap[nbits] >= min_top10, (nbits, top1, overlap[nbits])
        bpt = index.bytes_per_token()
        assert 0 < bpt < DIM * 4 / 4  # far below float32 (128 bytes / token here)
        assert index.info()["bytes_per_token"] == pytest.approx(bpt, abs=1e-3)
    assert overlap[4] > overlap[2]  # more bits, closer to exact


def test_full_vector_rerank_is_exact(tmp_path, corpus):
    docs, queries, exact, exact_scores = corpus
    index = _build(tmp_path, docs, keep_full_vectors=True, nprobe=8, ndocs=64)
    scores, ids = index.search(queries, 3)
    assert np.mean([i[0] == e[0] for i, e in zip(ids, exact)]) >= 0.95
    hit = [qi for qi in range(len(queries)) if ids[qi, 0] == exact[qi][0]]
    np.testing.assert_allclose(scores[hit, 0], [exact_scores[qi][0] for qi in hit], rtol=1e-5)
    # the batch reads every query's candidates together: the same results as one query at a time
    for qi in range(0, len(queries), 7):
        s1, i1 = index.search(queries[qi : qi + 1], 3)
        np.testing.assert_array_equal(i1[0], ids[qi])
        np.testing.assert_allclose(s1[0], scores[qi], rtol=1e-6)


def test_filter_add_remove_compact_roundtrip(tmp_path, corpus):
    docs, queries, exact, _ = corpus
    index = _build(tmp_path, docs[:250], nbits=2, nprobe=8)
    with pytest.raises(IndexStateError):
        PlaidIndex(DIM).search(queries[:1], 3)
    # add after training: assigned to the existing centroids
    extra_v, extra_o = _flat(docs[250:])
    index.add(np.arange(250, 300), extra_v, extra_o)
    assert len(index) == 300
    _, ids = index.search(queries, 10)
    assert np.mean([i[0] == e[0] for i, e in zip(ids, exact)]) >= 0.8
    # filters
    allowed = np.arange(0, 300, 3)
    _, ids = index.search(queries, 5, allowed=allowed)
    assert np.isin(ids[ids >= 0], allowed).all() and (ids[:, 0] >= 0).all()
    # delete
    gone = np.unique(ids[:, 0])
    assert index.remove(gone) == len(gone) and index.remove(gone) == 0
    _, ids2 = index.search(queries, 10)
    assert not np.isin(ids2, gone).any()
    assert not np.isin(index._ivf_docs, np.flatnonzero(~index._alive)).any()  # dropped from the lists
    # save / load
    index.save(tmp_path, 7)
    back = PlaidIndex(DIM, PlaidConfig(nbits=2, nprobe=8))
    back.load(tmp_path, 7, index.state())
    np.testing.assert_array_equal(back.search(queries, 10)[1], ids2)
    # compact: same results, fewer tokens
    n_tok = len(index._codes)
    index.compact()
    assert len(index._codes) < n_tok and index._alive.all() and len(index) == 300 - len(gone)
    np.testing.assert_array_equal(index.search(queries, 10)[1], ids2)
    back.remove(np.arange(10))  # loaded arrays are memory-mapped: deletes must still work
    assert len(back) == 300 - len(set(gone.tolist()) | set(range(10)))


def test_candidate_cap_and_threshold(tmp_path, corpus):
    docs, queries, exact, _ = corpus
    index = _build(tmp_path, docs, nprobe=8, ncandidates=40, ndocs=20, centroid_score_threshold=0.3)
    _, ids = index.search(queries, 10)
    assert np.mean([i[0] == e[0] for i, e in zip(ids, exact)]) >= 0.7
    with pytest.raises(TypeError):
        index.search(queries, 3, bogus=1)
    with pytest.raises(ValueError):
        PlaidConfig(nbits=3)


def test_batched_search_equals_one_query_at_a_time(tmp_path, corpus):
    docs, queries, *_ = corpus
    index = _build(tmp_path, docs, nprobe=4, ncandidates=60, ndocs=20)
    scores, ids = index.search(queries, 10)
    for qi in range(0, len(queries), 7):
        s1, i1 = index.search([queries[qi]], 10)
        np.testing.assert_array_equal(i1[0], ids[qi])
        np.testing.assert_allclose(s1[0], scores[qi], rtol=1e-5)


def test_float32_scores_equal_maxsim_over_decompressed_tokens(tmp_path, corpus):
    """The search scores q.(c + r)/|c + r| from centroid scores and residuals without building the
    vectors: the same numbers as MaxSim over `decompress` output."""
    docs, queries, *_ = corpus
    index = _build(tmp_path, docs, nbits=4, dtype="float32", device="cpu", nprobe=1000, ncandidates=10_000, ndocs=10_000)
    scores, ids = index.search(queries[:5], 8)
    codes, packed, offsets = index._codes, index._residuals, index._doc_offsets
    decompressed = [index.codec.decompress(codes[offsets[d] : offsets[d + 1]], packed[offsets[d] : offsets[d + 1]]) for d in range(len(docs))]
    for qi, q in enumerate(queries[:5]):
        order, expected = maxsim_rank(q, decompressed, k=8)
        np.testing.assert_array_equal(ids[qi], index._doc_iids[order])
        np.testing.assert_allclose(scores[qi], expected, rtol=1e-5, atol=1e-5)


def test_device_and_dtype_settings(tmp_path, corpus):
    docs, queries, exact, _ = corpus
    index = _build(tmp_path, docs, device="cpu", dtype="bfloat16", nprobe=8)
    _, ids = index.search(queries, 10)
    tensors = index._tensors
    assert tensors.device.type == "cpu" and tensors.dtype == torch.bfloat16
    assert np.mean([i[0] == e[0] for i, e in zip(ids, exact)]) >= 0.85
    index.remove(ids[:, 0])  # a change of the arrays makes new tensors
    assert index._tensors is not None
    index.search(queries[:1], 3)
    assert index._tensors is not tensors
    for bad in ({"device": "gpu"}, {"dtype": "int8"}):
        with pytest.raises(ValueError):
            PlaidConfig(**bad)


def test_inverse_norms_follow_add_and_compact(tmp_path, corpus):
    docs, queries, *_ = corpus
    index = _build(tmp_path, docs[:200], nprobe=8)
    index.search(queries[:2], 3)  # computes the norms of the current tokens
    extra_v, extra_o = _flat(docs[200:])
    index.add(np.arange(200, 300), extra_v, extra_o)
    index.remove(np.arange(0, 50))
    index.compact()
    index.search(queries[:2], 3)
    np.testing.assert_allclose(index._inv_norms, index.codec.inverse_norms(index._codes, index._residuals), rtol=1e-6)


def test_candidate_blocks_do_not_change_results(tmp_path, corpus, monkeypatch):
    """Candidates are scored in length-sorted blocks of bounded size: tiny blocks give the same ranking."""
    from mbert_retrieval.index import plaid_search

    docs, queries, *_ = corpus
    index = _build(tmp_path, docs, nprobe=4, ncandidates=80, ndocs=30, dtype="float32")
    scores, ids = index.search(queries[:8], 10)
    monkeypatch.setattr(plaid_search, "_BLOCK_ROWS", 16)
    s2, i2 = index.search(queries[:8], 10)
    np.testing.assert_array_equal(i2, ids)
    np.testing.assert_allclose(s2, scores, rtol=1e-6)


def test_kmeans_reports_each_iteration():
    """PLAID's k-means was one silent FAISS call (minutes on a real corpus): each iteration is reported now."""
    from mbert_retrieval.index.codec import ResidualCodec

    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2000, 16)).astype(np.float32)
    calls: list[int] = []
    codec = ResidualCodec.train(sample, 32, nbits=2, niter=5, seed=0, progress=calls.append)
    assert calls == [1] * 5 and codec.centroids.shape == (32, 16)


def test_streamed_per_token_arrays_give_the_same_results(tmp_path, corpus, monkeypatch):
    """On a CUDA device too small for the per-token arrays they stay in host memory and only the final
    candidates' rows are copied; the results are the same (here on the CPU, where both places are one)."""
    import torch

    from mbert_retrieval.index.plaid_search import fits_on_device

    docs, queries, _, _ = corpus
    index = _build(tmp_path, docs, nbits=2, nprobe=4)
    scores, ids = index.search(queries, 5)
    index._search_tensors(resident=False)
    streamed_scores, streamed_ids = index.search(queries, 5)
    np.testing.assert_array_equal(streamed_ids, ids)
    np.testing.assert_allclose(streamed_scores, scores, rtol=1e-6)
    # the automatic choice: always resident on the CPU; on CUDA, resident within half of the free memory
    assert fits_on_device(10**15, torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))
    assert fits_on_device(500, torch.device("cuda")) and not fits_on_device(501, torch.device("cuda"))
