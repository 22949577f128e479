"""Training configuration: one dataclass, loadable from JSON / TOML / YAML plus `key=value` overrides.

Every validation error names the offending field (and the file it came from).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["TrainConfig", "ConfigError", "load_config"]

KINDS = ("dense", "colbert")
LOSSES = ("infonce", "distill")


class ConfigError(ValueError):
    """A bad training setting; the message names the field (and the file when there is one)."""

    def __init__(self, field_name: str, message: str, path: str | os.PathLike | None = None):
        self.field = field_name
        self.message = message
        self.path = None if path is None else str(path)
        prefix = f"{self.path}: " if self.path else ""
        super().__init__(f"{prefix}field {field_name!r}: {message}")


@dataclass
class TrainConfig:
    """Everything one fine-tuning run needs. `None` means "the model's own setting" / "automatic"."""

    model: str = ""  # hub id or local path of the starting model
    data: list[str] = field(default_factory=list)  # BEIR folders and/or JSONL files (triples, pairs, mined)
    output_dir: str = "runs/train"
    kind: str = "dense"  # "dense" (bi-encoder) | "colbert"
    split: str = "train"  # qrels split used for BEIR folders
    epochs: int = 1
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 32  # queries per optimizer step and process
    mini_batch_size: int | None = None  # gradient caching chunk; None: no caching
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    temperature: float | None = None  # None: 0.05 for dense (cosine), 1.0 for colbert (MaxSim, as PyLate)
    n_hard_negatives: int = 0  # per query, on top of the in-batch negatives
    matryoshka_dims: list[int] | None = None  # dense only: sum of InfoNCE over these truncated dims
    loss: str = "infonce"  # "infonce" (contrastive) | "distill" (KL to teacher scores in the data)
    distill_normalize: bool | None = None  # min-max normalise student scores (None: True for colbert, as PyLate)
    seed: int = 42
    save_steps: int | None = None  # checkpoint every N steps; None/0: only the final model
    save_total_limit: int | None = 2  # keep the newest N checkpoints
    resume: bool = False  # continue from the newest checkpoint in output_dir
    max_query_length: int | None = None  # None: the model's setting
    max_doc_length: int | None = None
    colbert_dim: int | None = None  # colbert built on a plain encoder: projection size (None: 128)
    bf16: bool | None = None  # None: autocast to bf16 on a GPU that supports it
    gather_across_devices: bool = True  # in-batch negatives from every process (multi-GPU)
    drop_last: bool = False  # always True with several processes (equal batch shapes)

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(name, msg)

        need(self.kind in KINDS, "kind", f"must be one of {KINDS}, got {self.kind!r}")
        need(self.loss in LOSSES, "loss", f"must be one of {LOSSES}, got {self.loss!r}")
        need(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        need(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        need(self.mini_batch_size is None or self.mini_batch_size >= 1, "mini_batch_size",
             f"must be >= 1, got {self.mini_batch_size}")
        need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        need(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        need(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        need(self.temperature is None or self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        need(self.n_hard_negatives >= 0, "n_hard_negatives", f"must be >= 0, got {self.n_hard_negatives}")
        need(self.save_steps is None or self.save_steps >= 0, "save_steps", f"must be >= 0, got {self.save_steps}")
        need(self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit",
             f"must be >= 1, got {self.save_total_limit}")
        for name in ("max_query_length", "max_doc_length", "colbert_dim"):
            value = getattr(self, name)
            need(value is None or value >= 1, name, f"must be >= 1, got {value}")
        if self.matryoshka_dims is not None:
            need(len(self.matryoshka_dims) > 0 and all(d >= 1 for d in self.matryoshka_dims), "matryoshka_dims",
                 f"must be a non-empty list of positive ints, got {self.matryoshka_dims}")
            need(self.kind == "dense", "matryoshka_dims", "only the dense (bi-encoder) kind supports Matryoshka")
        if self.loss == "distill":
            need(self.n_hard_negatives >= 1, "n_hard_negatives",
                 "distillation needs documents with teacher scores: set n_hard_negatives >= 1")

    @property
    def resolved_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.05 if self.kind == "dense" else 1.0

    @property
    def resolved_distill_normalize(self) -> bool:
        return self.kind == "colbert" if self.distill_normalize is None else self.distill_normalize

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], path: str | os.PathLike | None = None) -> TrainConfig:
        """Build from a mapping; unknown keys and wrongly typed values raise ConfigError naming the field."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in names:
                raise ConfigError(key, f"unknown setting (known: {', '.join(sorted(names))})", path)
            kwargs[key] = _coerce(key, value, hints[key], path)
        try:
            return cls(**kwargs)
        except ConfigError as err:
            if path is not None and err.path is None:
                raise ConfigError(err.field, err.message, path) from None
            raise

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None,
                  ) -> TrainConfig:
        """Read .json / .toml / .yaml (.yml) and apply overrides (a dict, or "key=value" strings)."""
        values = _read_file(Path(path))
        values.update(parse_overrides(overrides))
        return cls.from_dict(values, path)


def parse_overrides(overrides: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """{"lr": 1e-5} as is; ["lr=1e-5", "data=a.jsonl,b.jsonl"] parsed (values stay strings, coerced later)."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(str(item), "override must look like key=value")
        out[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return out


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | Iterable[str] | None = None,
                ) -> TrainConfig:
    """A TrainConfig from an optional file plus overrides."""
    if path is None:
        return TrainConfig.from_dict(parse_overrides(overrides))
    return TrainConfig.from_file(path, overrides)


# ---------------------------------------------------------------------- helpers
def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError("<file>", "config file not found", path)
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10: the same parser, as the `tomli` backport
                import tomli as tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("<file>", "YAML config needs pyyaml; use .json or .toml", path) from None
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError("<file>", f"unsupported config format {suffix!r} (use .json, .toml or .yaml)", path)
    except ConfigError:
        raise
    except Exception as err:  # parse errors carry line numbers in their messages
        raise ConfigError("<file>", f"cannot parse: {err}", path) from None
    if isinstance(data, dict) and isinstance(data.get("train"), dict) and len(data) == 1:
        data = data["train"]  # allow a [train] table / train: section
    if not isinstance(data, dict):
        raise ConfigError("<file>", "top level must be a mapping of settings", path)
    return data


def _coerce(name: str, value: Any, hint: Any, path: str | os.PathLike | None) -> Any:
    """Check / convert `value` to the field's annotated type (strings from overrides are parsed)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not list else hint
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(name, "must not be null", path)
    origin = typing.get_origin(base)
    if origin is list:
        (item_type,) = typing.get_args(base)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"expected a list, got {type(value).__name__}", path)
        return [_scalar(name, v, item_type, path) for v in value]
    return _scalar(name, value, base, path)


def _scalar(name: str, value: Any, typ: Any, path: str | os.PathLike | None) -> Any:
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.strip().lower() in ("true", "1", "yes", "on")
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if isinstance(value, (str, os.PathLike)):
                return str(value)
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {getattr(typ, '__name__', typ)}, got {value!r}", path) from None
    return value
