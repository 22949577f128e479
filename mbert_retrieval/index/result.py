"""`Result`: the one search result type of the index, the `Retriever`, the CLI (`--json`) and the HTTP server."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Result", "Hit"]


@dataclass
class Result:
    """One retrieved document: its id, score, stored text/title/metadata and, for a document indexed as
    several windows, the character span of its best-scoring window (None: the document is one row)."""

    id: str
    score: float
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    window: tuple[int, int] | None = None

    @property
    def doc_id(self) -> str:
        return self.id

    @property
    def passage(self) -> str:
        """The text of the best-scoring window (the whole text for a document indexed as one row)."""
        return self.text if self.window is None else self.text[self.window[0] : self.window[1]]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["window"] = None if self.window is None else list(self.window)
        return out


Hit = Result  # the index layer's former name, kept for existing code
