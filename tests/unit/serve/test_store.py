"""The SQLite feedback store: the shared contract (store_contract.py), records' validation, reopening, durability."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from tailorlm.serve.store import FeedbackRecord, FeedbackStore, SQLiteStore, StoreError, open_store
from unit.serve.store_contract import (  # tests/ is on sys.path
    STORE_CONTRACT,
    check_paging,
    check_survives_sigkill,
    response,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "fb.sqlite")
    yield s
    s.close()


@pytest.mark.parametrize("check", STORE_CONTRACT, ids=lambda c: c.__name__)
def test_contract(store: SQLiteStore, check: Callable[[FeedbackStore], None]) -> None:
    check(store)


def test_paging(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    check_paging(store, monkeypatch)


def test_pragmas_and_schema_version(store: SQLiteStore) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM tailor_schema_version").fetchall() == [(1,)]
    conn.close()
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "fb.sqlite"  # parent folders are created
    with open_store(path) as s:  # type: ignore[attr-defined]
        s.record_response(response("r1"))
        s.record_feedback(FeedbackRecord(response_id="r1", edited="better"))
        s.promote("exp", "a", "sys-a")
    with open_store(str(path)) as s:  # type: ignore[attr-defined]
        assert s.counts() == {"responses": 1, "feedback": 1}
        assert next(s.feedback()).edited == "better"
        assert s.promoted("exp") == "sys-a"
        assert conn_versions(path) == [(1,)]  # reopening does not add a second version row


def conn_versions(path: Path) -> list[tuple[int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version FROM tailor_schema_version").fetchall()
    finally:
        conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fb.sqlite"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE tailor_schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        SQLiteStore(path)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "fb.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite"):
        open_store(path)


def test_sigkill_after_record_feedback(tmp_path: Path) -> None:
    path = tmp_path / "fb.sqlite"
    check_survives_sigkill(str(path), lambda: open_store(path))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({}, "at least one of"),
        ({"score": 0}, "greater than or equal to 1"),
        ({"score": 6}, "less than or equal to 5"),
        ({"score": "5"}, "valid integer"),
        ({"score": True}, "valid integer"),
        ({"rating": "meh"}, "'up' or 'down'"),
        ({"choice": "this"}, "needs both compare_to"),
        ({"compare_to": "r2", "rating": "up"}, "needs both compare_to"),
        ({"compare_to": "r1", "choice": "tie"}, "different response"),
        ({"rating": "up", "extra": 1}, "Extra inputs"),
    ],
)
def test_feedback_validation(fields: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        FeedbackRecord(response_id="r1", **fields)


def test_feedback_ids_and_defaults() -> None:
    a, b = FeedbackRecord(response_id="r", rating="up"), FeedbackRecord(response_id="r", comment="hm")
    assert a.id != b.id and a.id.startswith("fb-") and a.created > 0


@pytest.mark.parametrize("location", ["mysql://u:secret@h/db", "host=h dbname=d password=secret", "  "])
def test_unusable_locations_are_refused(location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as err:
        open_store(location)
    assert "secret" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no stray SQLite file
