"""On-disk primitives of the index layer: atomic writes, sha256 checksums, numpy arrays in safetensors
files (optionally memory-mapped) and FAISS indexes serialised to plain byte files. No pickle anywhere.

Every file is written to a temporary file in the same folder, fsynced, then `os.replace`d over its final
name, so a crash leaves either the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
from filelock import FileLock, Timeout

from .errors import IndexCorruptError, IndexStateError

__all__ = [
    "FileRecord",
    "TMP_PREFIX",
    "atomic_write_bytes",
    "atomic_write_text",
    "sha256_file",
    "verify_file",
    "save_arrays",
    "load_arrays",
    "read_metadata",
    "save_faiss",
    "load_faiss",
    "writer_lock",
    "read_lease",
    "readers_active",
    "plain_file_name",
    "remove_quietly",
]

TMP_PREFIX = ".tmp-"
_ST_DTYPES = {
    "F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
    "U64": np.uint64, "BOOL": np.bool_,
}  # fmt: skip


@dataclass(frozen=True)
class FileRecord:
    """Checksum and size of one file, as stored in the manifest / chunk registry."""

    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: Mapping) -> FileRecord:
        return cls(sha256=str(data["sha256"]), bytes=int(data["bytes"]))


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview | np.ndarray) -> FileRecord:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, os.replace)."""
    path = Path(path)
    view = np.ascontiguousarray(data).data.cast("B") if isinstance(data, np.ndarray) else memoryview(data)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(view)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    _fsync_dir(path.parent)
    return FileRecord(hashlib.sha256(view).hexdigest(), view.nbytes)


def atomic_write_text(path: str | Path, text: str) -> FileRecord:
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | Path, record: FileRecord, check_hash: bool = True) -> None:
    """Raise `IndexCorruptError` naming the file if it is missing, truncated/resized or its sha256 differs."""
    path = Path(path)
    if not path.is_file():
        raise IndexCorruptError(f"index file {path.name!r} is missing (expected in {path.parent})")
    size = path.stat().st_size
    if size != record.bytes:
        what = "truncated" if size < record.bytes else "larger than recorded"
        raise IndexCorruptError(f"index file {path.name!r} is {what}: {size} bytes, manifest says {record.bytes}")
    if check_hash and sha256_file(path) != record.sha256:
        raise IndexCorruptError(f"index file {path.name!r} is corrupt: sha256 does not match the manifest")


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> FileRecord:
    """Save named numpy arrays to a safetensors file, atomically."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=dict(metadata) if metadata else None)
    return atomic_write_bytes(path, data)


def _read_header(path: Path) -> tuple[dict, int]:
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise IndexCorruptError(f"index file {path.name!r} is not a valid safetensors file: {exc}") from exc
    return header, 8 + n


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata (`__metadata__`) of a safetensors file (header only: cheap)."""
    path = Path(path)
    meta = _read_header(path)[0].get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise IndexCorruptError(f"index file {path.name!r} has an invalid metadata header")
    return {str(k): str(v) for k, v in meta.items()}


def load_arrays(path: str | Path, names: list[str] | None = None, mmap: bool = False) -> dict[str, np.ndarray]:
    """Load arrays from a safetensors file; `mmap=True` maps them read-only instead of reading them."""
    path = Path(path)
    header, start = _read_header(path)
    size = path.stat().st_size
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if name == "__metadata__" or (names is not None and name not in names):
                continue
            try:
                dtype = np.dtype(_ST_DTYPES[info["dtype"]])
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as exc:
                raise IndexCorruptError(f"index file {path.name!r}: bad header entry for {name!r}") from exc
            count = int(np.prod(shape, dtype=np.int64))
            if end - begin != count * dtype.itemsize or start + end > size:
                raise IndexCorruptError(f"index file {path.name!r} is truncated or corrupt (tensor {name!r})")
            if count == 0:
                out[name] = np.zeros(shape, dtype=dtype)
            elif mmap:
                out[name] = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)
            else:
                f.seek(start + begin)
                out[name] = np.frombuffer(f.read(end - begin), dtype=dtype).reshape(shape).copy()
    if names is not None and (missing := set(names) - set(out)):
        raise IndexCorruptError(f"index file {path.name!r} lacks arrays {sorted(missing)}")
    return out


def save_faiss(path: str | Path, index) -> FileRecord:
    """Serialise a FAISS index (float or binary) into a byte file, atomically."""
    import faiss

    data = faiss.serialize_index_binary(index) if isinstance(index, faiss.IndexBinary) else faiss.serialize_index(index)
    return atomic_write_bytes(path, data)


def load_faiss(path: str | Path, binary: bool = False):
    """Read a FAISS index written by `save_faiss`."""
    import faiss

    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    try:
        return faiss.deserialize_index_binary(data) if binary else faiss.deserialize_index(data)
    except RuntimeError as exc:
        raise IndexCorruptError(f"index file {path.name!r} could not be read by faiss: {exc}") from exc


@contextlib.contextmanager
def writer_lock(directory: str | Path) -> Iterator[None]:
    """Exclusive, non-blocking writer lock on `directory/.lock` (one writer per index at a time; `filelock`,
    so it works on every platform). Raises `IndexStateError` when another process (or another `Index`
    object of this one) holds it."""
    lock = FileLock(str(Path(directory) / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise IndexStateError(f"another process is writing to the index at {directory}") from exc
    try:
        yield
    finally:
        lock.release()


LEASE_DIR = ".readers"
LEASE_STALE_SECONDS = 3600.0  # a lease this old is left over (its reader died on another host, or hung)


@contextlib.contextmanager
def read_lease(directory: str | Path) -> Iterator[None]:
    """Held by a reader while it loads a snapshot of the index (manifest, then the files it lists): a lease
    file `directory/.readers/<host>-<pid>-<random>.lease`. Writers delete no file while a live lease exists
    (`readers_active`), so a reader never finds the files of the generation it read removed under it.
    Readers never take the writer lock. A folder the reader may not write to gets no lease (the reader then
    relies on retrying from a fresh manifest)."""
    lease: Path | None = None
    try:
        path = Path(directory) / LEASE_DIR / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lease"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{time.time()}\n")
        lease = path
    except OSError:
        pass
    try:
        yield
    finally:
        if lease is not None:
            with contextlib.suppress(OSError):
                os.unlink(lease)


def readers_active(directory: str | Path) -> bool:
    """Whether a reader holds a live lease on `directory` (`read_lease`). Stale leases (their process is
    gone, on this host; or older than `LEASE_STALE_SECONDS`) are removed."""
    folder = Path(directory) / LEASE_DIR
    try:
        leases = list(folder.iterdir())
    except OSError:
        return False
    host, active = socket.gethostname(), False
    for lease in leases:
        parts = lease.name[: -len(".lease")].rsplit("-", 2) if lease.name.endswith(".lease") else []
        try:
            age = time.time() - lease.stat().st_mtime
        except OSError:
            continue  # released meanwhile
        dead = len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _process_alive(int(parts[1]))
        if dead or age > LEASE_STALE_SECONDS or len(parts) != 3:
            with contextlib.suppress(OSError):
                os.unlink(lease)
        else:
            active = True
    return active


def _process_alive(pid: int) -> bool:
    """Whether process `pid` exists (POSIX; elsewhere assumed alive: the lease ages out instead)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def plain_file_name(name: object, source: str) -> str:
    """`name` when it is a plain file name (no folder part, not `.`/`..`, not absolute, no drive); else
    `IndexCorruptError` naming `source`. Names read from index files are joined to the index folder only
    after this check, so a damaged or forged file can never make the index read or delete outside it."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or any(c in name for c in "/\\:\0")
        or Path(name).is_absolute()
    ):
        raise IndexCorruptError(f"{source} names the file {name!r}, which is not a plain file name inside the index folder")
    return name


def remove_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
