"""The store interface. LanceDB (embedded, the default) and PostgreSQL + pgvector implement it, and one test suite
(tests/integration/rag/test_stores.py) runs against both.

Atomicity contract: ``replace_documents`` makes each given document's new chunks visible together with its
record, or not at all. A reader never sees half of a document; a killed ingest leaves every document either in
its old state, its new state, or absent (and then the next ingest indexes it again, since its hash is missing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from tailorlm.errors import TailorError
from tailorlm.rag.types import Document, StoredChunk

# Metadata filters: {field: value} means equality, {field: [v1, v2]} means "any of". Fields are user metadata
# keys, plus the built-ins "doc_id" and "source". All conditions must hold.
Filter = Mapping[str, Any]


def check_batch(docs: Sequence[Document], chunks: Sequence[StoredChunk], dim: int) -> dict[str, Document]:
    """Validate a ``replace_documents`` batch the same way for every backend; returns the docs by id."""
    by_id = {d.doc_id: d for d in docs}
    if len(by_id) != len(docs):
        raise ValueError("replace_documents got the same doc_id twice")
    for c in chunks:
        if c.doc_id not in by_id:
            raise ValueError(f"chunk {c.chunk_id} belongs to {c.doc_id!r}, which is not in this batch")
        if c.vector.shape != (dim,) or c.sentences.ndim != 2 or c.sentences.shape[1] != dim:
            raise TailorError(
                f"chunk {c.chunk_id} has vectors of shape {c.vector.shape} / {c.sentences.shape}, "
                f"but the store is {dim}-d"
            )
    return by_id


class Store(Protocol):
    dim: int

    def document_hashes(self) -> dict[str, str]:
        """doc_id → content hash for every fully indexed document."""
        ...

    def document_sources(self) -> dict[str, str]:
        """doc_id → source (the file path a document was read from) for every fully indexed document."""
        ...

    def replace_documents(self, docs: Sequence[Document], chunks: Sequence[StoredChunk]) -> None:
        """Insert or replace these documents and their chunks (``chunks`` holds all chunks of all ``docs``)."""
        ...

    def delete_documents(self, doc_ids: Sequence[str]) -> None: ...

    def dense_search(self, vector: np.ndarray, k: int, where: Filter | None = None) -> list[tuple[StoredChunk, float]]:
        """Top-k chunks by cosine similarity of ``vector`` (normalized) to the chunk vectors, best first."""
        ...

    def lexical_search(self, query: str, k: int, where: Filter | None = None) -> list[tuple[StoredChunk, float]]:
        """Top-k chunks by full-text relevance (BM25 or the backend's ranking), best first."""
        ...

    def read_chunks(self, chunk_ids: Sequence[str] | None = None) -> list[StoredChunk]:
        """The visible chunks with these ids (every chunk when None), in no particular order; unknown ids are
        left out. For lookups by id (a hit's neighbours: ``doc_id#index±1``) and whole-index scans."""
        ...

    def count_chunks(self) -> int: ...

    def optimize(self) -> None:
        """Bring indexes up to date after writes (ANN and full-text indexes); cheap when nothing changed."""
        ...

    def close(self) -> None: ...
