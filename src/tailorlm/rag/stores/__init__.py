"""Vector stores for RAG: LanceDB (embedded, the default) and PostgreSQL + pgvector, behind one ``Store`` protocol.

The backend is picked by the location alone, so a config names a store with one string.
"""

from __future__ import annotations

from pathlib import Path

from tailorlm.core.system import is_postgres_url
from tailorlm.rag.stores.base import Filter, Store

__all__ = ["Filter", "Store", "open_store"]


def open_store(location: str, dim: int) -> Store:
    """A ``postgresql://`` or ``postgres://`` URL opens PostgreSQL + pgvector; anything else is a LanceDB directory."""
    # Imported here: each backend pulls in its client library, and a user of one never pays for the other.
    if is_postgres_url(location):
        from tailorlm.rag.stores.pgvector import PgVectorStore

        return PgVectorStore.open(location, dim)
    from tailorlm.rag.stores.lance import LanceStore

    return LanceStore.open(Path(location).expanduser(), dim)
