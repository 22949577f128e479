"""Small file helpers shared by the model formats: JSON configs, module weights (safetensors first; a
legacy pytorch_model.bin only through a weights-only `torch.load`, which runs no pickled code) and the
fingerprint of a model's weights (recorded in an index's manifest, checked when it is opened)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

__all__ = ["read_json", "write_json", "load_state", "weight_files", "file_fingerprint", "weights_fingerprint"]


def read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def load_state(folder: Path) -> dict:
    """A module's state dict from `folder`: model.safetensors, else pytorch_model.bin (weights only)."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        import torch

        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")


# ---------------------------------------------------------------------------------------------- fingerprints
# A model's weights fingerprint: cheap enough to compute on every index open (a few MB read for a 600 MB
# checkpoint), yet any retrained or re-initialised tensor changes it. A safetensors file is read through its
# header: for every tensor (by name) its dtype, shape and the sha256 of its data - whole when the file is at
# most 32 MiB (Dense layers, small models), else three 4 KiB blocks (first, middle, last) of each tensor.
# Header metadata and the tensors' order are left out, so a copy re-saved with the same tensors keeps the
# fingerprint. Not detected: in a large file, an edit of a few bytes inside a tensor away from its sampled
# blocks (training or re-initialising a tensor changes all of it). Other files (`pytorch_model*.bin`): the
# whole file up to 32 MiB, else its size and 64 evenly spaced blocks.
FINGERPRINT_SCHEME = "w1"
_FULL_HASH_BYTES = 32 << 20
_BLOCK = 4096
_SPREAD = 64
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")


def weight_files(folder: Path) -> list[Path]:
    """The weight files a model reads from `folder` (not recursive): model*.safetensors, else pytorch_model*.bin."""
    for pattern in WEIGHT_PATTERNS:
        found = sorted(p for p in Path(folder).glob(pattern) if p.is_file())
        if found:
            return found
    return []


def _safetensors_header(f: Any, size: int) -> dict | None:
    head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < n <= min(size - 8, 100 << 20):
        return None
    try:
        header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def file_fingerprint(path: Path) -> str:
    """sha256 (hex) of a weight file's tensors (safetensors) or bytes, sampled past 32 MiB (see above)."""
    import hashlib

    path = Path(path)
    size = path.stat().st_size
    whole = size <= _FULL_HASH_BYTES
    with open(path, "rb") as f:
        header = _safetensors_header(f, size) if path.suffix == ".safetensors" else None
        if header is not None:
            digest = hashlib.sha256(f"{FINGERPRINT_SCHEME}:safetensors".encode())
            data_start = f.tell()
            for name in sorted(k for k in header if k != "__metadata__"):
                info = header[name]
                begin, end = (int(x) for x in info["data_offsets"])
                digest.update(f"\n{name}|{info['dtype']}|{info['shape']}|".encode())
                length = end - begin if whole else min(_BLOCK, end - begin)
                starts = [begin] if whole else [begin, begin + (end - begin - length) // 2, end - length]
                for start in starts:
                    f.seek(data_start + start)
                    digest.update(hashlib.sha256(f.read(length)).digest())
            return digest.hexdigest()
        digest = hashlib.sha256(f"{FINGERPRINT_SCHEME}:{size}:".encode())
        f.seek(0)
        if whole:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            room = size - _BLOCK
            for i in range(_SPREAD):
                f.seek(room * i // (_SPREAD - 1))
                digest.update(f.read(_BLOCK))
    return digest.hexdigest()


def weights_fingerprint(files: Sequence[tuple[str, Path]], extra: Sequence[bytes] = ()) -> str:
    """One fingerprint for a model's weight files (`(role, path)`, e.g. ("transformer", .../model.safetensors))
    and any weights it holds only in memory (`extra`: raw tensor bytes, e.g. a new random projection)."""
    import hashlib

    digest = hashlib.sha256(FINGERPRINT_SCHEME.encode())
    for role, path in files:
        digest.update(f"\n{role}/{Path(path).name}:{file_fingerprint(Path(path))}".encode())
    for blob in extra:
        digest.update(b"\nmemory:" + hashlib.sha256(blob).digest())
    return f"{FINGERPRINT_SCHEME}:{digest.hexdigest()[:32]}"
