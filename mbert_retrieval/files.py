"""Small file helpers shared by the model formats: JSON configs and module weights (safetensors first; a
legacy pytorch_model.bin only through a weights-only `torch.load`, which runs no pickled code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_json", "write_json", "load_state"]


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
