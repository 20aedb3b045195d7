"""The feedback store on PostgreSQL: for several server replicas behind a load balancer, sharing one store.

Same tables and behaviour as ``SQLiteStore`` (see ``store.py``), with ``record`` as JSONB. Nothing is cached in
the process: every read goes to the database, so a promotion made through one replica (or ``tailor ab
promote``) is seen by all of them on their next request.

Connections come from a tiny pool of our own (``psycopg_pool`` is not a dependency): idle connections are
reused, a broken one is dropped rather than returned, and each call runs in its own transaction that is
committed before the call returns.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tailorlm.serve.store import (
    PAGE_SIZE,
    SCHEMA_VERSION,
    FeedbackRecord,
    ResponseRecord,
    StoreError,
    check_version,
    paged,
    response_filter,
    unknown_error,
    unknown_ids,
)

# Idle connections kept for reuse; more may be open at once under load, the surplus is closed when returned.
MAX_IDLE = 8

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tailor_schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS tailor_responses (
        id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, model TEXT NOT NULL, system TEXT NOT NULL,
        experiment TEXT, arm TEXT, shadow BOOLEAN NOT NULL, status INTEGER NOT NULL, record JSONB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tailor_responses_created ON tailor_responses (created, id)",
    "CREATE INDEX IF NOT EXISTS tailor_responses_experiment ON tailor_responses (experiment, created)",
    """CREATE TABLE IF NOT EXISTS tailor_feedback (
        id TEXT PRIMARY KEY, response_id TEXT NOT NULL REFERENCES tailor_responses (id),
        compare_to TEXT REFERENCES tailor_responses (id), created DOUBLE PRECISION NOT NULL,
        record JSONB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tailor_feedback_created ON tailor_feedback (created, id)",
    "CREATE INDEX IF NOT EXISTS tailor_feedback_response ON tailor_feedback (response_id)",
    """CREATE TABLE IF NOT EXISTS tailor_promotions (
        experiment TEXT PRIMARY KEY, arm TEXT NOT NULL, system TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)""",
)
# Replicas starting together would race on CREATE TABLE IF NOT EXISTS (it is not atomic in PostgreSQL); an
# advisory lock held for the schema transaction serializes them. The number is arbitrary but fixed.
_SCHEMA_LOCK = 0x7461696C6F72


def _pg(sql: str) -> str:
    """The shared SQL is written with ``?`` placeholders; psycopg wants ``%s``."""
    return sql.replace("?", "%s")


class PostgresStore:
    """``FeedbackStore`` on PostgreSQL. ``url`` is a libpq URL: ``postgresql://user:pass@host:5432/db``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
            found = conn.execute("SELECT max(version) FROM tailor_schema_version").fetchone()[0]
            check_version(found, self._where())
            if found is None:
                conn.execute("INSERT INTO tailor_schema_version VALUES (%s)", (SCHEMA_VERSION,))

    def _where(self) -> str:
        # The URL without its password, for messages.
        try:
            info = psycopg.conninfo.conninfo_to_dict(self._url)
        except psycopg.ProgrammingError:
            return "postgresql store"
        return f"postgresql://{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self._url, autocommit=True)  # transactions are explicit: see _tx
        except psycopg.Error as err:
            raise StoreError(
                f"cannot connect to the feedback store at {self._where()}: {str(err).strip()}",
                hint="check the URL, that the server runs, and that the user may connect to the database",
            ) from err

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        """A pooled connection inside one transaction: committed on success, rolled back on error."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            with conn.transaction():
                yield conn
        except BaseException:
            if conn.broken or conn.closed:
                conn.close()
                raise
            self._release(conn)
            raise
        self._release(conn)

    def _release(self, conn: psycopg.Connection) -> None:
        if self._idle.qsize() < MAX_IDLE and not conn.closed:
            self._idle.put(conn)
        else:
            conn.close()

    def record_response(self, r: ResponseRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                """INSERT INTO tailor_responses VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (id) DO UPDATE SET created = EXCLUDED.created, model = EXCLUDED.model,
                system = EXCLUDED.system, experiment = EXCLUDED.experiment, arm = EXCLUDED.arm,
                shadow = EXCLUDED.shadow, status = EXCLUDED.status, record = EXCLUDED.record""",
                (
                    r.id,
                    r.created,
                    r.model,
                    r.system,
                    r.experiment,
                    r.arm,
                    r.shadow,
                    r.status,
                    Jsonb(r.model_dump(mode="json")),
                ),
            )

    def record_feedback(self, f: FeedbackRecord) -> None:
        ids = [i for i in (f.response_id, f.compare_to) if i is not None]
        with self._tx() as conn:
            # FOR SHARE: the responses cannot disappear between this check and the insert.
            rows = conn.execute("SELECT id FROM tailor_responses WHERE id = ANY(%s) FOR SHARE", (ids,)).fetchall()
            if missing := unknown_ids(f, {row[0] for row in rows}):
                raise unknown_error(missing)
            conn.execute(
                """INSERT INTO tailor_feedback VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (id) DO UPDATE SET response_id = EXCLUDED.response_id,
                compare_to = EXCLUDED.compare_to, created = EXCLUDED.created, record = EXCLUDED.record""",
                (f.id, f.response_id, f.compare_to, f.created, Jsonb(f.model_dump(mode="json"))),
            )

    def get_response(self, response_id: str) -> ResponseRecord | None:
        with self._tx() as conn:
            row = conn.execute("SELECT record FROM tailor_responses WHERE id = %s", (response_id,)).fetchone()
        return ResponseRecord.model_validate(row[0]) if row else None

    def _fetch(self, select: str) -> Any:
        def fetch(where: str, params: list[Any]) -> list[Any]:
            with self._tx() as conn:
                sql = f"{select} WHERE {where} ORDER BY created, id LIMIT {PAGE_SIZE}"
                return conn.execute(_pg(sql).encode(), params).fetchall()

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
        for row in paged(self._fetch("SELECT created, id, record FROM tailor_responses"), terms, params):
            yield ResponseRecord.model_validate(row[2])

    def feedback(
        self, *, since: float | None = None, until: float | None = None, experiment: str | None = None
    ) -> Iterator[FeedbackRecord]:
        terms, params = response_filter(since, until, None, None)
        if experiment is not None:
            terms.append("response_id IN (SELECT id FROM tailor_responses WHERE experiment = ?)")
            params.append(experiment)
        for row in paged(self._fetch("SELECT created, id, record FROM tailor_feedback"), terms, params):
            yield FeedbackRecord.model_validate(row[2])

    def counts(self) -> dict[str, int]:
        with self._tx() as conn:
            responses = conn.execute("SELECT count(*) FROM tailor_responses").fetchone()[0]
            feedback = conn.execute("SELECT count(*) FROM tailor_feedback").fetchone()[0]
        return {"responses": responses, "feedback": feedback}

    def promote(self, experiment: str, arm: str, system: str) -> None:
        with self._tx() as conn:
            conn.execute(
                """INSERT INTO tailor_promotions VALUES (%s, %s, %s, %s) ON CONFLICT (experiment)
                DO UPDATE SET arm = EXCLUDED.arm, system = EXCLUDED.system, created = EXCLUDED.created""",
                (experiment, arm, system, time.time()),
            )

    def promoted(self, experiment: str) -> str | None:
        with self._tx() as conn:
            row = conn.execute("SELECT system FROM tailor_promotions WHERE experiment = %s", (experiment,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
