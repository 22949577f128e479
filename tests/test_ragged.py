import numpy as np

from mbert_retrieval.ragged import offsets_of, token_rows


def test_offsets_of_lengths():
    np.testing.assert_array_equal(offsets_of([2, 0, 3]), [0, 2, 2, 5])
    assert offsets_of(np.array([], dtype=np.int64)).tolist() == [0] and offsets_of([4]).dtype == np.int64


def test_token_rows_gather_documents_in_the_order_asked():
    lengths = [2, 0, 3, 1]
    tokens = np.arange(6)  # token i is row i: documents [0 1] [] [2 3 4] [5]
    rows, got = token_rows(offsets_of(lengths), np.array([2, 0, 1, 3, 2]))
    assert tokens[rows].tolist() == [2, 3, 4, 0, 1, 5, 2, 3, 4] and got.tolist() == [3, 2, 0, 1, 3]
    rows, got = token_rows(offsets_of(lengths), np.array([], dtype=np.int64))
    assert rows.tolist() == [] and got.tolist() == []
