"""The records that flow through the RAG pipeline. Plain dataclasses: they cross process and store boundaries."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def content_hash(text: str, metadata: dict[str, Any] | None = None) -> str:
    """What decides "unchanged" on re-ingest: the text and the user metadata, not the file's mtime."""
    h = hashlib.sha256(text.encode("utf-8"))
    h.update(b"\0")
    h.update(json.dumps(metadata or {}, sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


@dataclass(frozen=True)
class Document:
    """One source document. ``doc_id`` is stable across runs (a relative path, or ``path#row`` for a record)."""

    doc_id: str
    source: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    hash: str = ""

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", content_hash(self.text, self.metadata))


@dataclass(frozen=True)
class Chunk:
    """A span of a document. ``text == document.text[start:end]``, so a citation can point at the exact span."""

    doc_id: str
    index: int
    text: str
    start: int
    end: int
    heading: str = ""  # the heading path above the chunk ("Intro > Setup"), empty when the source has none

    @property
    def chunk_id(self) -> str:
        return f"{self.doc_id}#{self.index}"


@dataclass
class StoredChunk:
    """A chunk as a store holds it: with its document's fields and its vectors.

    ``vector`` is the chunk's first-stage vector (L2-normalized mean of its sentence vectors); ``sentences`` holds
    the sentence vectors themselves, int8-quantized (x127), used to rescore candidates by max-sim.
    """

    chunk_id: str
    doc_id: str
    doc_hash: str
    source: str
    title: str
    heading: str
    text: str
    start: int
    end: int
    metadata: dict[str, Any]
    vector: np.ndarray
    sentences: np.ndarray  # int8, shape (n_sentences, dim)


@dataclass
class Hit:
    """One retrieved chunk and why: the fused ``score`` plus the per-retriever scores that went into it."""

    chunk: StoredChunk
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    rank: int = 0
    # With neighbour expansion, ``chunk`` is the window and this is the (start, end) of the chunk that matched.
    core: tuple[int, int] | None = None

    def as_json(self) -> dict[str, Any]:
        c = self.chunk
        return {
            "rank": self.rank,
            "score": round(float(self.score), 6),
            "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
            "chunk_id": c.chunk_id,
            "doc_id": c.doc_id,
            "source": c.source,
            "title": c.title,
            "heading": c.heading,
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "metadata": c.metadata,
            **({"match_start": self.core[0], "match_end": self.core[1]} if self.core else {}),
        }
