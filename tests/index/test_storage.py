import os
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from mbert_retrieval.index.errors import IndexCorruptError, IndexStateError
from mbert_retrieval.index.storage import (
    FileRecord, atomic_write_bytes, load_arrays, load_faiss, plain_file_name, read_metadata, save_arrays, save_faiss, sha256_file,
    verify_file, writer_lock,
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


def test_writer_lock_held_by_another_process(tmp_path):
    import subprocess
    import sys

    code = ("import sys, time\nfrom mbert_retrieval.index.storage import writer_lock\n"
            "with writer_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.readline()\n")  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(IndexStateError, match=f"another process is writing to the index at {re.escape(str(tmp_path))}"):
            with writer_lock(tmp_path):
                pass
    finally:
        child.communicate("\n", timeout=60)
    with writer_lock(tmp_path):  # released when the other process let go
        pass


def test_writer_lock_does_not_need_fcntl(tmp_path, monkeypatch):
    """Windows has no fcntl: the lock must still exclude (it used to silently lock nothing there)."""
    import sys

    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` now raises ImportError
    with writer_lock(tmp_path):
        with pytest.raises(IndexStateError):
            with writer_lock(tmp_path):
                pass


def test_no_module_level_fcntl_import_in_the_package():
    import ast

    root = Path(__file__).resolve().parents[2]
    for f in [*root.glob("mbert_retrieval/**/*.py"), *root.glob("cli/*.py"), *root.glob("eval/*.py")]:
        for node in ast.parse(f.read_text(encoding="utf-8")).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) else []
            assert "fcntl" not in names, f"{f.relative_to(root)} imports fcntl at module level (breaks Windows)"


@pytest.mark.parametrize("name", ["00000001.safetensors", "dense.000003.faiss", "shard-00001", "a..b"])
def test_plain_file_names_pass(name):
    assert plain_file_name(name, "x") == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", "a\\b", "C:x", "nul\0", None, 3])
def test_paths_are_refused_with_their_source(name):
    with pytest.raises(IndexCorruptError, match="docs.sqlite names the file"):
        plain_file_name(name, "docs.sqlite")


def test_read_metadata(tmp_path):
    save_arrays(tmp_path / "a.safetensors", {"x": np.zeros(3, np.float32)}, metadata={"kind": "dense", "seq": "4"})
    assert read_metadata(tmp_path / "a.safetensors") == {"kind": "dense", "seq": "4"}
    save_arrays(tmp_path / "b.safetensors", {"x": np.zeros(3, np.float32)})
    assert read_metadata(tmp_path / "b.safetensors") == {}


def test_no_pickle_in_index_package():
    root = Path(__file__).resolve().parents[2] / "mbert_retrieval" / "index"
    for f in root.glob("*.py"):
        text = f.read_text()
        assert not re.search(r"import pickle|pickle\.|allow_pickle\s*=\s*True|torch\.load|np\.load\(", text), f.name
