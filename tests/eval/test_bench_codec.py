"""The codec fidelity benchmark (`eval/bench_codec.py`) on small synthetic tokens: four codecs on one k-means."""

import numpy as np

from mbert_retrieval.eval import bench_codec


def test_codec_variants_are_measured_on_held_out_tokens():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, 32)).astype(np.float32)

    def tokens(n):
        x = centres[rng.integers(0, 12, n)] + rng.standard_normal((n, 32)).astype(np.float32) * rng.lognormal(-1.2, 0.5, (n, 1))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    D = [tokens(int(rng.integers(10, 30))) for _ in range(200)]
    Q = [tokens(8) for _ in range(10)]
    res = bench_codec.run(D, Q, nbits=2, sample_size=3000, test_size=1000, seed=0)
    assert res["sample"] == 3000 and res["test"] == min(1000, res["n_tokens"] - 3000)
    before, lloyd, scaled, product = res["rows"].values()
    assert product["bytes_per_token"] == scaled["bytes_per_token"] == lloyd["bytes_per_token"] + 2 == 32 * 2 // 8 + 4
    assert product["one_minus_cos"] < scaled["one_minus_cos"]
    assert scaled["score_rmse"] < lloyd["score_rmse"] < before["score_rmse"]
    assert 0 < scaled["one_minus_cos"] < before["one_minus_cos"]
