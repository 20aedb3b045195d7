"""The feedback store: every answered request and every piece of feedback on one, kept durably.

Two records and one protocol. ``ResponseRecord`` is one request the server answered (or failed), with what
feedback export needs to rebuild the prompt; ``FeedbackRecord`` is a user's judgement of one response (a thumbs
rating, a 1–5 score, a comment, an edited better answer, or a pairwise choice against a second response).
``FeedbackStore`` is what the server, ``tailor feedback export`` and ``tailor ab`` talk to; ``open_store`` picks
the backend from the location: a SQLite file by default, PostgreSQL (``store_pg.py``) for a ``postgresql://``
URL, which several server replicas can share.

Durability is the contract: ``record_feedback`` returns only after the commit, and the server sends its 2xx
only after that, so a feedback the client saw accepted survives a SIGKILL of the server. SQLite therefore runs
in WAL mode with ``synchronous=FULL`` (WAL's default ``NORMAL`` may lose the last commits on power loss).

Both backends keep the same four tables: a few indexed columns for the filters, and the whole record as JSON
(``record``), so that adding a field to a record needs no migration.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tailorlm.errors import TailorError

SCHEMA_VERSION = 1
# Keyset pages: iterators never hold the lock (or a cursor) while the caller works on a row.
PAGE_SIZE = 1000


class UnknownResponseError(TailorError):
    """Feedback names a response id the store has never recorded."""


class StoreError(TailorError):
    """The store cannot be opened or used (bad location, newer schema, database unreachable)."""


class ResponseRecord(BaseModel):
    """One answered (or failed) request, as the client saw it, plus what served it."""

    id: str  # the "chatcmpl-..." / "cmpl-..." id returned to the client
    created: float  # unix time
    model: str  # the name the client asked for: a System name or an experiment name
    system: str  # the System that answered (System.name)
    experiment: str | None = None
    arm: str | None = None
    shadow: bool = False  # a shadow answer, never returned to the client
    user: str | None = None  # sticky id: the OpenAI ``user`` field or the API key's id (never the key)
    request: dict[str, Any]  # {"messages": [...]} or {"prompt": "..."}: what feedback export rebuilds prompts from
    response: str  # the answer text ("" on error)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: int = 200  # HTTP status sent
    error: str | None = None
    citations: list[dict[str, Any]] | None = None  # not None exactly when a RAG System answered
    abstained: bool = False  # the RAG System said it does not know


def _feedback_id() -> str:
    return f"fb-{uuid.uuid4().hex}"


class FeedbackRecord(BaseModel):
    """A user's judgement of one response. Strict: it is built from a client's JSON body."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=_feedback_id)
    response_id: str
    created: float = Field(default_factory=time.time)
    rating: Literal["up", "down"] | None = None
    score: int | None = Field(default=None, ge=1, le=5, strict=True)  # strict: true and "5" are not scores
    comment: str | None = None
    edited: str | None = None  # a better answer written by the user
    compare_to: str | None = None  # another response id, for a pairwise choice
    choice: Literal["this", "other", "tie"] | None = None  # which of (response_id, compare_to) the user preferred
    user: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackRecord:
        if all(v is None for v in (self.rating, self.score, self.comment, self.edited, self.choice)):
            raise ValueError("feedback needs at least one of rating, score, comment, edited or choice")
        if (self.choice is None) != (self.compare_to is None):
            raise ValueError("a pairwise choice needs both compare_to (the other response id) and choice")
        if self.compare_to is not None and self.compare_to == self.response_id:
            raise ValueError("compare_to must name a different response than response_id")
        return self


class FeedbackStore(Protocol):
    """Where the server records responses and feedback; every write is committed when the call returns."""

    def record_response(self, r: ResponseRecord) -> None: ...
    def record_feedback(self, f: FeedbackRecord) -> None: ...
    def get_response(self, response_id: str) -> ResponseRecord | None: ...
    def responses(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        model: str | None = None,
        experiment: str | None = None,
    ) -> Iterator[ResponseRecord]: ...
    def feedback(
        self, *, since: float | None = None, until: float | None = None, experiment: str | None = None
    ) -> Iterator[FeedbackRecord]: ...
    def counts(self) -> dict[str, int]: ...
    def promote(self, experiment: str, arm: str, system: str) -> None: ...
    def promoted(self, experiment: str) -> str | None: ...
    def close(self) -> None: ...


# --- SQL shared by both backends (written with ``?``; PostgreSQL swaps in ``%s``) ---------------------------


def response_filter(
    since: float | None, until: float | None, model: str | None, experiment: str | None, prefix: str = ""
) -> tuple[list[str], list[Any]]:
    """WHERE terms and parameters for the ``responses`` filters: ``since <= created < until``."""
    terms: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("created", ">=", since),
        ("created", "<", until),
        ("model", "=", model),
        ("experiment", "=", experiment),
    ):
        if value is not None:
            terms.append(f"{prefix}{column} {op} ?")
            params.append(value)
    return terms, params


def unknown_ids(f: FeedbackRecord, found: set[str]) -> list[str]:
    """The ids ``f`` refers to that are not in ``found``."""
    return [i for i in (f.response_id, f.compare_to) if i is not None and i not in found]


def unknown_error(missing: list[str]) -> UnknownResponseError:
    return UnknownResponseError(
        f"unknown response id {', '.join(repr(m) for m in missing)}",
        hint="feedback must name the id of a response this server returned (the 'id' of its answer)",
    )


def paged(fetch: Any, terms: list[str], params: list[Any]) -> Iterator[Any]:
    """Yield rows page by page, ordered by ``(created, id)``: ``fetch(sql_where, params) -> rows``.

    Each page is a separate short query (keyset pagination), so a slow consumer holds no lock and no open
    transaction, and concurrent writers are never blocked by an export.
    """
    last: tuple[float, str] | None = None
    while True:
        where = list(terms)
        args = list(params)
        if last is not None:
            where.append("(created > ? OR (created = ? AND id > ?))")
            args += [last[0], last[0], last[1]]
        rows = fetch(" AND ".join(where) or "TRUE", args)
        yield from rows
        if len(rows) < PAGE_SIZE:
            return
        last = (rows[-1][0], rows[-1][1])


# --- SQLite ---------------------------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS tailor_schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tailor_responses (
    id TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT NOT NULL, system TEXT NOT NULL,
    experiment TEXT, arm TEXT, shadow INTEGER NOT NULL, status INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tailor_responses_created ON tailor_responses (created, id);
CREATE INDEX IF NOT EXISTS tailor_responses_experiment ON tailor_responses (experiment, created);
CREATE TABLE IF NOT EXISTS tailor_feedback (
    id TEXT PRIMARY KEY, response_id TEXT NOT NULL REFERENCES tailor_responses (id),
    compare_to TEXT REFERENCES tailor_responses (id), created REAL NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tailor_feedback_created ON tailor_feedback (created, id);
CREATE INDEX IF NOT EXISTS tailor_feedback_response ON tailor_feedback (response_id);
CREATE TABLE IF NOT EXISTS tailor_promotions (
    experiment TEXT PRIMARY KEY, arm TEXT NOT NULL, system TEXT NOT NULL, created REAL NOT NULL);
"""


def check_version(found: int | None, location: str) -> None:
    if found is not None and found > SCHEMA_VERSION:
        raise StoreError(
            f"{location}: feedback store schema version {found} is newer than this tailorlm reads ({SCHEMA_VERSION})",
            hint="upgrade tailorlm, or point --store at another location",
        )


class SQLiteStore:
    """The default store: one SQLite file, one connection guarded by a lock (the server calls from a thread pool).

    One connection rather than one per thread: SQLite serializes writers anyway, and a single connection keeps
    the WAL checkpointing in one place. Other processes (``tailor feedback export`` while the server runs) may
    open the same file; ``busy_timeout`` makes them wait for a writer instead of failing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit; writes open their own BEGIN IMMEDIATE ... COMMIT below.
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open the feedback store {self.path}: {err}") from err
        self._lock = threading.Lock()
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            # Statement by statement inside one transaction: executescript() would commit it first.
            with self._lock, self._write():
                for statement in filter(str.strip, _SQLITE_SCHEMA.split(";")):
                    self._conn.execute(statement)
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise StoreError(f"{self.path} is not a usable SQLite feedback store: {err}") from err
        row = self._conn.execute("SELECT max(version) FROM tailor_schema_version").fetchone()
        check_version(row[0], str(self.path))
        if row[0] is None:
            with self._lock, self._write():
                self._conn.execute("INSERT INTO tailor_schema_version VALUES (?)", (SCHEMA_VERSION,))

    def _write(self) -> _Transaction:
        return _Transaction(self._conn)

    def record_response(self, r: ResponseRecord) -> None:
        # INSERT OR REPLACE: a retried write of the same id is idempotent rather than an error mid-request.
        with self._lock, self._write():
            self._conn.execute(
                "INSERT OR REPLACE INTO tailor_responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.id,
                    r.created,
                    r.model,
                    r.system,
                    r.experiment,
                    r.arm,
                    int(r.shadow),
                    r.status,
                    r.model_dump_json(),
                ),
            )

    def record_feedback(self, f: FeedbackRecord) -> None:
        ids = [i for i in (f.response_id, f.compare_to) if i is not None]
        with self._lock, self._write():
            marks = ", ".join("?" * len(ids))
            found = {
                row[0] for row in self._conn.execute(f"SELECT id FROM tailor_responses WHERE id IN ({marks})", ids)
            }
            if missing := unknown_ids(f, found):
                raise unknown_error(missing)
            self._conn.execute(
                "INSERT OR REPLACE INTO tailor_feedback VALUES (?, ?, ?, ?, ?)",
                (f.id, f.response_id, f.compare_to, f.created, f.model_dump_json()),
            )

    def get_response(self, response_id: str) -> ResponseRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT record FROM tailor_responses WHERE id = ?", (response_id,)).fetchone()
        return ResponseRecord.model_validate_json(row[0]) if row else None

    def _fetch(self, select: str, order: str) -> Any:
        def fetch(where: str, params: list[Any]) -> list[Any]:
            with self._lock:
                sql = f"{select} WHERE {where} ORDER BY {order} LIMIT {PAGE_SIZE}"
                return self._conn.execute(sql, params).fetchall()

        return fetch

    def responses(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        model: str | None = None,
        experiment: str | None = None,
    ) -> Iterator[ResponseRecord]:
        terms, params = response_filter(since, until, model, experiment)
        fetch = self._fetch("SELECT created, id, record FROM tailor_responses", "created, id")
        for row in paged(fetch, terms, params):
            yield ResponseRecord.model_validate_json(row[2])

    def feedback(
        self, *, since: float | None = None, until: float | None = None, experiment: str | None = None
    ) -> Iterator[FeedbackRecord]:
        terms, params = response_filter(since, until, None, None)
        if experiment is not None:
            terms.append("response_id IN (SELECT id FROM tailor_responses WHERE experiment = ?)")
            params.append(experiment)
        fetch = self._fetch("SELECT created, id, record FROM tailor_feedback", "created, id")
        for row in paged(fetch, terms, params):
            yield FeedbackRecord.model_validate_json(row[2])

    def counts(self) -> dict[str, int]:
        with self._lock:
            responses = self._conn.execute("SELECT count(*) FROM tailor_responses").fetchone()[0]
            feedback = self._conn.execute("SELECT count(*) FROM tailor_feedback").fetchone()[0]
        return {"responses": responses, "feedback": feedback}

    def promote(self, experiment: str, arm: str, system: str) -> None:
        with self._lock, self._write():
            self._conn.execute(
                "INSERT OR REPLACE INTO tailor_promotions VALUES (?, ?, ?, ?)", (experiment, arm, system, time.time())
            )

    def promoted(self, experiment: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT system FROM tailor_promotions WHERE experiment = ?", (experiment,)
            ).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error). IMMEDIATE takes the write lock up front, so a
    read-then-write (the id check in ``record_feedback``) cannot be invalidated by another process in between."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_store(location: str | Path) -> FeedbackStore:
    """``postgresql://...`` / ``postgres://...`` → ``PostgresStore``; anything else is a SQLite file path."""
    if is_postgres_url(location):
        from tailorlm.serve.store_pg import PostgresStore

        return PostgresStore(str(location))
    text = str(location)
    if not text.strip():
        raise StoreError("no feedback store given", hint="pass a SQLite file path or a postgresql:// URL")
    # Anything URL-like or a libpq keyword string ("host=... dbname=...") is surely not meant as a file name:
    # refuse it rather than create a SQLite file called "mysql://...".
    # The location may hold a password: the message names only its scheme.
    if isinstance(location, str) and ("://" in text or re.match(r"\s*\w+\s*=", text)):
        what = f"{text.split('://')[0]}:// URL" if "://" in text else "libpq keyword string"
        raise StoreError(
            f"cannot open a feedback store from a {what}: only SQLite paths and postgresql:// URLs",
            hint="pass a SQLite file path or a postgresql://user:password@host:5432/dbname URL",
        )
    return SQLiteStore(Path(location).expanduser())
