"""`manifest.json`: what an index folder holds and how it was built. JSON, written atomically,
validated on read (errors name the offending field)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import IndexCorruptError, IndexManifestError, IndexMismatchError
from .storage import FileRecord, atomic_write_text, plain_file_name

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "KINDS", "INDEX_TYPES", "IndexManifest", "new_index_id", "utc_now"]

FORMAT_VERSION = 2  # 2: index_id (files bound to the manifest), model_fingerprint, long documents as windows (params["window"],
# the `windows` table of docs.sqlite); version 1 folders still open
MANIFEST_NAME = "manifest.json"
KINDS = ("dense", "colbert")
INDEX_TYPES = {"dense": ("flat", "hnsw", "ivfpq"), "colbert": ("flat", "plaid")}
QUANTIZATIONS = (None, "int8", "binary")
STATES = ("building", "ready")
_INDEX_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_index_id() -> str:
    """A fresh index id (uuid4, with dashes: never read back as a number by SQLite)."""
    return str(uuid.uuid4())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class IndexManifest:
    """Description of an index folder. `files` holds the sha256/size of every structure file;
    `generation` numbers the structure files currently in use (bumped at each checkpoint). `index_id`
    (a uuid made once, None in folders of format 1 until their next write) is also recorded in docs.sqlite
    and in every chunk file, so a file of another index swapped in is refused. `model_fingerprint`
    identifies the model weights the vectors came from (when the model gives one)."""

    kind: str
    index_type: str
    model_id: str
    dim: int
    model_revision: str | None = None
    model_fingerprint: str | None = None
    index_id: str | None = None
    metric: str = "ip"
    quantization: str | None = None
    n_documents: int = 0
    n_vectors: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    generation: int = 0
    state: str = "building"
    format_version: int = FORMAT_VERSION
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        def bad(name: str, why: str) -> IndexManifestError:
            return IndexManifestError(f"manifest field {name!r} {why}, got {getattr(self, name)!r}")

        if not isinstance(self.format_version, int) or self.format_version < 1:
            raise bad("format_version", "must be a positive int")
        if self.format_version > FORMAT_VERSION:
            raise IndexMismatchError(
                f"index format_version {self.format_version} is newer than this library supports ({FORMAT_VERSION})"
            )
        if self.kind not in KINDS:
            raise bad("kind", f"must be one of {KINDS}")
        if self.index_type not in INDEX_TYPES[self.kind]:
            raise bad("index_type", f"must be one of {INDEX_TYPES[self.kind]} for kind {self.kind!r}")
        if not isinstance(self.model_id, str) or not self.model_id:
            raise bad("model_id", "must be a non-empty string")
        for name in ("model_revision", "model_fingerprint"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise bad(name, "must be a string or null")
        if self.index_id is not None and (not isinstance(self.index_id, str) or not _INDEX_ID.match(self.index_id)):
            raise bad("index_id", "must be a uuid string or null")
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim <= 0:
            raise bad("dim", "must be a positive int")
        if self.metric != "ip":
            raise bad("metric", "must be 'ip'")
        if self.quantization not in QUANTIZATIONS:
            raise bad("quantization", f"must be one of {QUANTIZATIONS}")
        if self.quantization is not None and self.kind != "dense":
            raise bad("quantization", "is only supported for dense indexes")
        for name in ("n_documents", "n_vectors", "generation"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, "must be a non-negative int")
        if not isinstance(self.params, dict):
            raise bad("params", "must be an object")
        if not isinstance(self.files, dict):
            raise bad("files", "must be an object")
        for fname, rec in self.files.items():
            try:
                plain_file_name(fname, "manifest field 'files'")
            except IndexCorruptError as exc:
                raise IndexManifestError(str(exc)) from None
            if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str) or not isinstance(rec.get("bytes"), int) or fname.startswith("."):
                raise IndexManifestError(f"manifest field 'files' has an invalid entry for {fname!r}: {rec!r}")
        if self.state not in STATES:
            raise bad("state", f"must be one of {STATES}")
        for name in ("created_at", "updated_at"):
            try:
                datetime.fromisoformat(getattr(self, name))
            except (TypeError, ValueError):
                raise bad(name, "must be an ISO 8601 timestamp") from None

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> IndexManifest:
        if not isinstance(data, dict):
            raise IndexManifestError("manifest.json must hold a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise IndexManifestError(f"manifest has unknown fields {sorted(unknown)}")
        for name in ("kind", "index_type", "model_id", "dim"):
            if name not in data:
                raise IndexManifestError(f"manifest field {name!r} is missing")
        return cls(**data)

    def save(self, directory: str | Path) -> None:
        """Write `directory/manifest.json` atomically (stamps `updated_at`)."""
        self.updated_at = utc_now()
        self.validate()
        atomic_write_text(Path(directory) / MANIFEST_NAME, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> IndexManifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST_NAME} in {directory}: not an index folder")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexManifestError(f"{MANIFEST_NAME} in {directory} is corrupt or truncated: {exc}") from exc
        return cls.from_dict(data)

    def file_records(self) -> dict[str, FileRecord]:
        return {name: FileRecord.from_dict(rec) for name, rec in self.files.items()}

    # ----------------------------------------------------------------- compatibility
    def check_compatible(self, model: Any) -> None:
        """Raise `IndexMismatchError` when `model` cannot query/extend this index (kind, model_id, dim)."""
        kind = getattr(model, "kind", None)
        model_id = getattr(model, "model_id", None)
        dim = getattr(model, "dim", None)
        if kind != self.kind:
            raise IndexMismatchError(f"index holds {self.kind!r} vectors but the model is {kind!r}")
        if model_id != self.model_id:
            raise IndexMismatchError(
                f"index was built with model {self.model_id!r} but the model given is {model_id!r}; "
                "query it with the same model (or rebuild the index)"
            )
        if dim != self.dim:
            raise IndexMismatchError(f"index dim is {self.dim} but model {model_id!r} gives dim {dim}")
        fingerprint = getattr(model, "fingerprint", None)
        if self.model_fingerprint and fingerprint and fingerprint != self.model_fingerprint:
            raise IndexMismatchError(
                f"index was built with different weights of {self.model_id} (fingerprint {self.model_fingerprint} != "
                f"{fingerprint}); re-index or pass the original model"
            )
        revision = getattr(model, "revision", None)
        if self.model_revision and revision and revision != self.model_revision:
            logger.warning(
                "index was built with revision %s of %s, the model is at revision %s",
                self.model_revision, self.model_id, revision,
            )  # fmt: skip
