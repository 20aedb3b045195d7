"""The PostgreSQL feedback store against a real server (pgserver, or TAILOR_PG_URL): the same contract as SQLite,
plus what only a shared store has to do: two replicas (two store objects) see each other's writes and promotions."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import psycopg
import pytest

from tailorlm.serve.store import FeedbackRecord, FeedbackStore, StoreError, UnknownResponseError, open_store
from tailorlm.serve.store_pg import PostgresStore
from unit.serve.store_contract import STORE_CONTRACT, check_paging, check_survives_sigkill, response

pytestmark = pytest.mark.integration


@pytest.fixture
def schema_url(pg_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema: each test gets its own tables, and drops them after."""
    schema = f"fb_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        # A URL (not a libpq keyword string): open_store tells PostgreSQL from a SQLite path by the scheme.
        sep = "&" if "?" in pg_url else "?"
        yield f"{pg_url}{sep}options={quote(f'-c search_path={schema}')}"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def store(schema_url: str) -> Iterator[FeedbackStore]:
    s = PostgresStore(schema_url)
    yield s
    s.close()


def test_open_store_picks_postgres(schema_url: str) -> None:
    for url in (schema_url, schema_url.replace("postgresql://", "postgres://", 1)):
        with open_store(url) as s:  # type: ignore[attr-defined]
            assert isinstance(s, PostgresStore)


@pytest.mark.parametrize("check", STORE_CONTRACT, ids=lambda c: c.__name__)
def test_contract(store: FeedbackStore, check: Callable[[FeedbackStore], None]) -> None:
    check(store)


def test_paging(store: FeedbackStore, monkeypatch: pytest.MonkeyPatch) -> None:
    check_paging(store, monkeypatch)


def test_replicas_share_writes_and_promotions(schema_url: str) -> None:
    a, b = PostgresStore(schema_url), PostgresStore(schema_url)  # the second open finds the schema in place
    try:
        a.record_response(response("r1"))
        b.record_feedback(FeedbackRecord(response_id="r1", rating="up"))  # b sees a's response at once
        assert a.counts() == {"responses": 1, "feedback": 1}
        assert b.promoted("exp") is None
        a.promote("exp", "b", "sys-b")
        assert b.promoted("exp") == "sys-b"
        with pytest.raises(UnknownResponseError):
            b.record_feedback(FeedbackRecord(response_id="nope", rating="up"))
    finally:
        a.close()
        b.close()


def test_sigkill_after_record_feedback(schema_url: str) -> None:
    check_survives_sigkill(schema_url, lambda: open_store(schema_url))


def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to the feedback store"):
        open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
