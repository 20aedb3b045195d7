"""Fixtures shared by the integration tests of several packages."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL URL with pgvector: ``TAILOR_PG_URL`` when set, else a throwaway server from ``pgserver``.

    Tests that write to it must use their own table prefix and drop their tables: with ``TAILOR_PG_URL`` the
    database is someone's, and with pgserver it is shared by the whole session.
    """
    url = os.environ.get("TAILOR_PG_URL")
    if url:
        yield url
        return
    # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): noise, not a problem.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            pgserver = None
        # A short path: the server's unix socket lives in its data directory, and socket paths max out at ~100 bytes.
        srv = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop") if pgserver else None
    if srv is None:
        pytest.skip("PostgreSQL tests need the pgserver package (pip install -e '.[dev]') or TAILOR_PG_URL")
    import psycopg

    try:
        url = srv.get_uri()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield url
    finally:
        srv.cleanup()
