"""Fixtures for the CLI tests."""

from __future__ import annotations

import pytest


class EncodeCounter:
    """Documents encoded by BiEncoder, one entry per `encode_documents` call; `interrupt_at(n)` makes the n-th
    call raise KeyboardInterrupt (a Ctrl-C in the middle of a build), once."""

    def __init__(self) -> None:
        self.encoded: list[int] = []
        self.fail_at: int | None = None

    def interrupt_at(self, call: int) -> None:
        self.fail_at = call


@pytest.fixture
def encode_counter(monkeypatch) -> EncodeCounter:
    from mbert_retrieval.biencoder import BiEncoder

    counter = EncodeCounter()
    original = BiEncoder.encode_documents

    def counted(self, texts, show_progress=False):
        if counter.fail_at is not None and len(counter.encoded) + 1 == counter.fail_at:
            counter.fail_at = None
            raise KeyboardInterrupt
        counter.encoded.append(len(texts))
        return original(self, texts, show_progress=show_progress)

    monkeypatch.setattr(BiEncoder, "encode_documents", counted)
    return counter
