import pytest

from mbert_retrieval.batching import pack_rows, token_budget_batches


def test_token_budget_respected_and_every_index_once():
    lengths = [5, 300, 17, 17, 2, 90, 64, 64, 1, 250]
    plans = token_budget_batches(lengths, max_tokens=400, max_batch_size=4)
    seen = sorted(i for p in plans for i in p.indices)
    assert seen == list(range(len(lengths)))
    for p in plans:
        assert p.max_length == max(lengths[i] for i in p.indices)
        assert len(p.indices) <= 4
        assert p.padded_tokens <= 400 or len(p.indices) == 1
    # sorted longest first, so similar lengths share a batch
    assert plans[0].indices[0] == 1


def test_oversized_item_gets_its_own_batch():
    plans = token_budget_batches([1000, 3, 3], max_tokens=100)
    assert plans[0].indices == (0,)


def test_invalid_budget():
    with pytest.raises(ValueError):
        token_budget_batches([1], max_tokens=0)


def test_pack_rows_first_fit():
    rows = pack_rows([8, 4, 4, 3, 1], capacity=8)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum([8, 4, 4, 3, 1][i] for i in r) <= 8 for r in rows)
    assert len(rows) == 3
    with pytest.raises(ValueError, match="capacity"):
        pack_rows([9], capacity=8)


def test_long_input_is_not_padded_with_short_ones():
    """One 8192-token input among short ones: under the default budget it would fit two rows of 8192, but a
    short text padded to 8192 tokens doubles the compute of that batch; it gets a batch of its own."""
    lengths = [12, 8192, 30, 7, 250, 31, 64]
    plans = token_budget_batches(lengths, max_tokens=16384)
    assert plans[0].indices == (1,)
    assert sorted(i for p in plans for i in p.indices) == list(range(len(lengths)))
    assert all(p.padded_tokens <= 16384 for p in plans)


def test_short_items_stay_in_few_batches():
    """The padding rule does not split batches of short texts (their padding is cheap)."""
    lengths = [3 + (i % 5) for i in range(200)]
    assert len(token_budget_batches(lengths, max_tokens=16384, max_batch_size=256)) == 1
    with pytest.raises(ValueError):
        token_budget_batches([1], max_padding_ratio=-1)
