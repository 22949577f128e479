import os
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from mbert_retrieval.index.errors import IndexCorruptError, IndexStateError
from mbert_retrieval.index.storage import (
    FileRecord, atomic_write_bytes, load_arrays, load_faiss, save_arrays, save_faiss, sha256_file, verify_file, writer_lock,
)  # fmt: skip


def test_atomic_write_and_checksum(tmp_path):
    rec = atomic_write_bytes(tmp_path / "a.bin", b"hello")
    assert (tmp_path / "a.bin").read_bytes() == b"hello"
    assert rec.bytes == 5 and rec.sha256 == sha256_file(tmp_path / "a.bin")
    verify_file(tmp_path / "a.bin", rec)


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    atomic_write_bytes(tmp_path / "a.bin", b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "a.bin", b"new content")
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_arrays_roundtrip_and_mmap(tmp_path):
    arrays = {"v": np.random.rand(7, 4).astype(np.float32), "ids": np.arange(7), "e": np.zeros((0, 4), np.float32),
              "b": np.array([True, False]), "u": np.arange(5, dtype=np.uint16)}  # fmt: skip
    save_arrays(tmp_path / "x.safetensors", arrays)
    for mmap in (False, True):
        out = load_arrays(tmp_path / "x.safetensors", mmap=mmap)
        for k, v in arrays.items():
            np.testing.assert_array_equal(out[k], v)
            assert out[k].dtype == v.dtype


def test_corrupt_and_truncated_files_detected(tmp_path):
    rec = save_arrays(tmp_path / "x.safetensors", {"v": np.random.rand(50, 8).astype(np.float32)})
    data = bytearray((tmp_path / "x.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "x.safetensors").write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"x\.safetensors.*sha256"):
        verify_file(tmp_path / "x.safetensors", rec)
    (tmp_path / "x.safetensors").write_bytes(bytes(data[:-100]))
    with pytest.raises(IndexCorruptError, match=r"x\.safetensors.*truncated"):
        verify_file(tmp_path / "x.safetensors", rec)
    with pytest.raises(IndexCorruptError, match="x.safetensors"):
        load_arrays(tmp_path / "x.safetensors")
    with pytest.raises(IndexCorruptError, match="missing"):
        verify_file(tmp_path / "nope.bin", FileRecord("0" * 64, 1))


def test_faiss_roundtrip(tmp_path):
    x = np.random.rand(20, 16).astype(np.float32)
    idx = faiss.IndexIDMap2(faiss.IndexFlatIP(16))
    idx.add_with_ids(x, np.arange(100, 120))
    save_faiss(tmp_path / "f.faiss", idx)
    back = load_faiss(tmp_path / "f.faiss")
    np.testing.assert_array_equal(back.search(x[:3], 2)[1], idx.search(x[:3], 2)[1])
    b = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(16))
    b.add_with_ids(np.packbits(x > 0.5, axis=1), np.arange(20))
    save_faiss(tmp_path / "b.faiss", b)
    assert load_faiss(tmp_path / "b.faiss", binary=True).ntotal == 20
    (tmp_path / "g.faiss").write_bytes(b"garbage!" * 4)
    with pytest.raises(IndexCorruptError, match="g.faiss"):
        load_faiss(tmp_path / "g.faiss")


def test_writer_lock_is_exclusive(tmp_path):
    with writer_lock(tmp_path):
        with pytest.raises(IndexStateError):
            with writer_lock(tmp_path):
                pass
    with writer_lock(tmp_path):  # released
        pass


def test_no_pickle_in_index_package():
    root = Path(__file__).resolve().parents[2] / "mbert_retrieval" / "index"
    for f in root.glob("*.py"):
        text = f.read_text()
        assert not re.search(r"import pickle|pickle\.|allow_pickle\s*=\s*True|torch\.load|np\.load\(", text), f.name
