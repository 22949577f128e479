"""PyLate's Dense module (`pylate.models.Dense.Dense`): the projection(s) a ColBERT applies to every token
vector, read from and written to PyLate / sentence-transformers `N_Dense` folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .files import load_state

__all__ = ["DENSE_TYPE", "DenseLayer"]

DENSE_TYPE = "pylate.models.Dense.Dense"  # the module type in modules.json


def _activation(name: str) -> nn.Module:
    """torch.nn activation from its dotted class name (only torch.nn classes: no arbitrary imports)."""
    cls = getattr(nn, name.rsplit(".", 1)[-1], None) if name.startswith("torch.nn.") else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"unsupported Dense activation {name!r} (only torch.nn modules are allowed)")
    return cls()


class DenseLayer(nn.Module):
    """One PyLate Dense module applied to every token vector: activation(linear(x)) [+ residual]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 activation_function: str = "torch.nn.modules.linear.Identity", use_residual: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = _activation(activation_function)
        self.use_residual = use_residual
        if use_residual and in_features != out_features:
            self.residual = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(self.linear(x))
        if self.use_residual:
            y = y + (self.residual(x) if hasattr(self, "residual") else x)
        return y

    def config_dict(self) -> dict:
        act = type(self.activation)
        return {"in_features": self.linear.in_features, "out_features": self.linear.out_features,
                "bias": self.linear.bias is not None, "activation_function": f"{act.__module__}.{act.__name__}",
                "use_residual": self.use_residual}

    @classmethod
    def load(cls, folder: Path) -> DenseLayer:
        """From a PyLate/sentence-transformers Dense folder; weights from safetensors, else a weights-only torch.load."""
        cfg = json.loads((folder / "config.json").read_text())
        layer = cls(int(cfg["in_features"]), int(cfg["out_features"]), bool(cfg.get("bias", True)),
                    cfg.get("activation_function") or "torch.nn.modules.linear.Identity",
                    bool(cfg.get("use_residual", False)))
        layer.load_state_dict(load_state(folder))
        return layer
