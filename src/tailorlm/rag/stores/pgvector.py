"""PostgreSQL + pgvector store: for a team that already runs Postgres, or several writers and readers at once.

Two tables, ``{prefix}_documents`` (one row per document) and ``{prefix}_chunks``. Atomicity is PostgreSQL's:
``replace_documents`` deletes the old chunks, COPYs the new ones and upserts the document rows in one
transaction, so under MVCC a reader sees each document entirely old or entirely new, and a killed ingest rolls
back to the old state. The chunks' foreign key to their document is checked at commit (DEFERRABLE), which lets
the records be written last, in the same order as the LanceDB store.

Indexes: HNSW (``vector_cosine_ops``) on the chunk vector, GIN on a generated ``tsvector`` of
title + heading + text for lexical search, GIN (``jsonb_path_ops``) on the metadata for ``@>`` filters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from tailorlm.errors import TailorError
from tailorlm.rag.stores.base import Filter, check_batch
from tailorlm.rag.types import Document, StoredChunk

_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")
# hnsw.ef_search caps how many rows an HNSW index scan returns (pgvector < 0.8 has no iterative scan), so it must
# be at least k; pgvector accepts up to 1000.
EF_SEARCH_MIN, EF_SEARCH_MAX = 40, 1000

_COLUMNS = (
    "chunk_id, doc_id, doc_hash, source, title, heading, text, start_pos, end_pos, metadata, vector, "
    "sentences, n_sentences"
)

# The query's own lexemes (stemmed, stop words dropped, by the same 'english' config as the documents) ORed into
# a tsquery. plainto_tsquery would AND them, and a natural-language question then matches almost nothing. Each
# lexeme is quoted for tsquery input syntax (backslash and quote escaped) and the string is cast to tsquery,
# which does not re-parse or re-stem it. The user's text only ever travels as a bound parameter.
_OR_TSQUERY = sql.SQL(
    "(SELECT string_agg('''' || replace(replace(lex, '\\', '\\\\'), '''', '''''') || '''', ' | ')::tsquery"
    " FROM unnest(tsvector_to_array(to_tsvector('english', %(q)s))) AS lex)"
)


class PgVectorStore:
    """The :class:`~tailorlm.rag.stores.base.Store` on PostgreSQL with the pgvector extension."""

    def __init__(self, conn: psycopg.Connection, dim: int, prefix: str) -> None:
        self.dim = dim
        self.prefix = prefix
        self._conn = conn
        self._docs = sql.Identifier(f"{prefix}_documents")
        self._chunks = sql.Identifier(f"{prefix}_chunks")
        self._ef_search = 0

    @classmethod
    def open(cls, url: str, dim: int, table_prefix: str = "tailor") -> PgVectorStore:
        if not _PREFIX.fullmatch(table_prefix):
            raise TailorError(f"table prefix {table_prefix!r} must be lowercase letters, digits and underscores")
        try:
            conn = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as e:
            raise TailorError(f"cannot connect to PostgreSQL: {e}".strip()) from e
        try:
            # Checked first: creating an extension needs privileges that using one does not.
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as e:
            conn.close()
            raise TailorError(
                f"the pgvector extension is not available: {e}".strip(),
                hint="install pgvector on the server, or have an admin run CREATE EXTENSION vector",
            ) from e
        register_vector(conn)
        store = cls(conn, dim, table_prefix)
        stored = store._stored_dim()
        if stored is None:
            store._create_tables()
        elif stored != dim:
            conn.close()
            raise TailorError(
                f"the store {table_prefix!r} holds {stored}-d vectors but the embedder makes {dim}-d ones",
                hint="use the embedder the store was built with, or ingest under another table prefix",
            )
        return store

    def _stored_dim(self) -> int | None:
        # pgvector keeps a vector column's dimension as its type modifier.
        row = self._conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'vector'",
            [f"{self.prefix}_chunks"],
        ).fetchone()
        return None if row is None else int(row[0])

    def _create_tables(self) -> None:
        p = self.prefix
        ddl = [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {docs} (doc_id text PRIMARY KEY, hash text NOT NULL, source text NOT NULL,"
                " title text NOT NULL, metadata jsonb NOT NULL)"
            ),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {chunks} ("
                " chunk_id text PRIMARY KEY,"
                " doc_id text NOT NULL REFERENCES {docs} (doc_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,"
                " doc_hash text NOT NULL, source text NOT NULL, title text NOT NULL, heading text NOT NULL,"
                " text text NOT NULL, start_pos integer NOT NULL, end_pos integer NOT NULL, metadata jsonb NOT NULL,"
                " vector vector({dim}) NOT NULL,"
                # int8 (n_sentences, dim) as raw bytes: round-trips exactly, n*dim bytes.
                " sentences bytea NOT NULL, n_sentences integer NOT NULL,"
                " tsv tsvector GENERATED ALWAYS AS"
                " (to_tsvector('english', title || ' ' || heading || ' ' || text)) STORED)"
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {ix_doc} ON {chunks} (doc_id)"),
            sql.SQL("CREATE INDEX IF NOT EXISTS {ix_source} ON {chunks} (source)"),
            sql.SQL("CREATE INDEX IF NOT EXISTS {ix_vec} ON {chunks} USING hnsw (vector vector_cosine_ops)"),
            sql.SQL("CREATE INDEX IF NOT EXISTS {ix_tsv} ON {chunks} USING gin (tsv)"),
            sql.SQL("CREATE INDEX IF NOT EXISTS {ix_meta} ON {chunks} USING gin (metadata jsonb_path_ops)"),
        ]
        names = {
            "docs": self._docs,
            "chunks": self._chunks,
            "dim": sql.Literal(self.dim),
            **{f"ix_{s}": sql.Identifier(f"{p}_chunks_{s}_idx") for s in ("doc", "source", "vec", "tsv", "meta")},
        }
        with self._conn.transaction():
            for stmt in ddl:
                self._conn.execute(stmt.format(**names))

    # -- writes ----------------------------------------------------------------------------------------------

    def document_hashes(self) -> dict[str, str]:
        rows = self._conn.execute(sql.SQL("SELECT doc_id, hash FROM {}").format(self._docs)).fetchall()
        return dict(rows)

    def document_sources(self) -> dict[str, str]:
        rows = self._conn.execute(sql.SQL("SELECT doc_id, source FROM {}").format(self._docs)).fetchall()
        return dict(rows)

    def replace_documents(self, docs: Sequence[Document], chunks: Sequence[StoredChunk]) -> None:
        if not docs:
            return
        by_id = check_batch(docs, chunks, self.dim)
        # One transaction: readers see the old state until COMMIT, then the new one; an exception or a killed
        # process rolls everything back.
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE doc_id = ANY(%s)").format(self._chunks), [list(by_id)])
            copy = sql.SQL("COPY {} ({}) FROM STDIN").format(self._chunks, sql.SQL(_COLUMNS))
            with cur.copy(copy) as cp:
                for c in chunks:
                    cp.write_row(
                        (
                            c.chunk_id,
                            c.doc_id,
                            by_id[c.doc_id].hash,
                            c.source,
                            c.title,
                            c.heading,
                            c.text,
                            c.start,
                            c.end,
                            Jsonb(c.metadata),
                            np.asarray(c.vector, dtype=np.float32),
                            np.ascontiguousarray(c.sentences, dtype=np.int8).tobytes(),
                            c.sentences.shape[0],
                        )
                    )
            self._write_records(cur, docs)

    def _write_records(self, cur: psycopg.Cursor, docs: Sequence[Document]) -> None:
        """Upsert the document rows, last in the transaction (the deferred foreign key is checked at COMMIT)."""
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (doc_id, hash, source, title, metadata) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (doc_id) DO UPDATE SET hash = EXCLUDED.hash, source = EXCLUDED.source,"
                " title = EXCLUDED.title, metadata = EXCLUDED.metadata"
            ).format(self._docs),
            [(d.doc_id, d.hash, d.source, d.title, Jsonb(d.metadata)) for d in docs],
        )

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        if doc_ids:  # ON DELETE CASCADE takes the chunks along, in the same statement
            self._conn.execute(sql.SQL("DELETE FROM {} WHERE doc_id = ANY(%s)").format(self._docs), [list(doc_ids)])

    # -- reads -----------------------------------------------------------------------------------------------

    def dense_search(self, vector: np.ndarray, k: int, where: Filter | None = None) -> list[tuple[StoredChunk, float]]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape != (self.dim,):
            raise TailorError(f"query vector has {query.shape[0]} dims, the store {self.dim}")
        if k <= 0:
            return []
        cond, params = self._where(where)
        params |= {"v": query, "k": k}
        self._set_ef_search(k)
        stmt = sql.SQL(
            "SELECT {cols}, 1 - (vector <=> %(v)s) FROM {chunks} WHERE {cond} ORDER BY vector <=> %(v)s LIMIT %(k)s"
        )
        names = {"cols": sql.SQL(_COLUMNS), "chunks": self._chunks, "cond": cond}
        rows = self._conn.execute(stmt.format(**names), params).fetchall()
        if where and len(rows) < k:
            # pgvector < 0.8 filters after the HNSW scan, which yields only ef_search rows: a selective filter can
            # leave fewer than k. Ordering by an expression the index cannot serve forces an exact scan of the
            # filtered rows, so the filter really applies before the top k.
            exact = sql.SQL(
                "SELECT {cols}, 1 - (vector <=> %(v)s) FROM {chunks} WHERE {cond}"
                " ORDER BY (vector <=> %(v)s) + 0 LIMIT %(k)s"
            )
            rows = self._conn.execute(exact.format(**names), params).fetchall()
        return [self._to_hit(r) for r in rows]

    def lexical_search(self, query: str, k: int, where: Filter | None = None) -> list[tuple[StoredChunk, float]]:
        if not query.strip() or k <= 0:
            return []
        cond, params = self._where(where)
        stmt = sql.SQL(
            "SELECT {cols}, ts_rank_cd(tsv, q.tsq) AS score FROM {chunks}, {tsq} AS q(tsq)"
            " WHERE tsv @@ q.tsq AND {cond} ORDER BY score DESC, chunk_id LIMIT %(k)s"
        ).format(cols=sql.SQL(_COLUMNS), chunks=self._chunks, tsq=_OR_TSQUERY, cond=cond)
        rows = self._conn.execute(stmt, params | {"q": query, "k": k}).fetchall()
        return [self._to_hit(r) for r in rows]

    def read_chunks(self, chunk_ids: Sequence[str] | None = None) -> list[StoredChunk]:
        if chunk_ids is not None and not chunk_ids:
            return []
        cond = sql.SQL("TRUE") if chunk_ids is None else sql.SQL("chunk_id = ANY(%(ids)s)")
        stmt = sql.SQL("SELECT {cols}, 0 FROM {chunks} WHERE {cond}").format(
            cols=sql.SQL(_COLUMNS), chunks=self._chunks, cond=cond
        )
        rows = self._conn.execute(stmt, {"ids": list(chunk_ids or [])}).fetchall()
        return [self._to_hit(r)[0] for r in rows]

    def _set_ef_search(self, k: int) -> None:
        ef = min(max(EF_SEARCH_MIN, 2 * k), EF_SEARCH_MAX)
        if ef != self._ef_search:  # a session setting: one round trip only when k changes
            self._conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", [str(ef)])
            self._ef_search = ef

    @staticmethod
    def _where(where: Filter | None) -> tuple[sql.Composable, dict[str, Any]]:
        """The filter as SQL with named parameters; values are always bound, never spliced into the text."""
        parts: list[sql.Composable] = []
        params: dict[str, Any] = {}
        for i, (key, value) in enumerate((where or {}).items()):
            values = list(value) if isinstance(value, list | tuple) else [value]
            name = f"f{i}"
            if not values:
                parts.append(sql.SQL("FALSE"))
            elif key in ("doc_id", "source"):
                if not all(isinstance(v, str) for v in values):
                    raise TailorError(f"filter on {key!r} takes strings, got {value!r}")
                parts.append(sql.SQL("{} = ANY({})").format(sql.Identifier(key), sql.Placeholder(name)))
                params[name] = values
            else:
                if not all(v is None or isinstance(v, bool | int | float | str) for v in values):
                    raise TailorError(
                        f"unsupported filter value {value!r} for {key!r}: use a string, number, boolean or null, "
                        "or a list of them"
                    )
                # One containment test per value: the GIN (jsonb_path_ops) index serves @>, and jsonb compares
                # numbers by value (1 = 1.0) and keeps true apart from 1.
                ors = []
                for j, v in enumerate(values):
                    params[f"{name}_{j}"] = Jsonb({key: v})
                    ors.append(sql.SQL("metadata @> {}").format(sql.Placeholder(f"{name}_{j}")))
                parts.append(sql.SQL("({})").format(sql.SQL(" OR ").join(ors)))
        return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")), params

    def _to_hit(self, row: tuple[Any, ...]) -> tuple[StoredChunk, float]:
        (chunk_id, doc_id, doc_hash, source, title, heading, text, start, end, metadata, vector, sents, n, score) = row
        chunk = StoredChunk(
            chunk_id=chunk_id,
            doc_id=doc_id,
            doc_hash=doc_hash,
            source=source,
            title=title,
            heading=heading,
            text=text,
            start=start,
            end=end,
            metadata=metadata,
            vector=vector.to_numpy().astype(np.float32, copy=False),  # pgvector >= 0.4 loads a Vector
            sentences=np.frombuffer(sents, dtype=np.int8).reshape(n, self.dim).copy(),
        )
        return chunk, float(score)

    def count_chunks(self) -> int:
        row = self._conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._chunks)).fetchone()
        return int(row[0]) if row else 0

    # -- maintenance -----------------------------------------------------------------------------------------

    def optimize(self) -> None:
        # HNSW and GIN indexes are maintained on every write; VACUUM reclaims what replaced chunks left behind
        # (dead index entries included) and ANALYZE refreshes the planner's statistics. Both are cheap when
        # nothing changed, and need autocommit (this connection has it).
        for table in (self._chunks, self._docs):
            self._conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))

    def close(self) -> None:
        self._conn.close()  # idempotent in psycopg


# The index config lives beside the tables it describes, so every process and machine using the URL embeds alike.
_META = "tailor_meta"


def read_meta(url: str, key: str) -> Any:
    """A JSON value stored under ``key`` for this database (None when absent, or when the table is missing)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (_META,)).fetchone()
            if not exists or exists[0] is None:
                return None
            row = conn.execute(
                sql.SQL("SELECT value FROM {} WHERE key = %s").format(sql.Identifier(_META)), (key,)
            ).fetchone()
    except psycopg.OperationalError as e:
        raise TailorError(f"cannot connect to PostgreSQL: {e}".strip()) from e
    return row[0] if row else None


def write_meta(url: str, key: str, value: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value jsonb NOT NULL)").format(
                sql.Identifier(_META)
            )
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ).format(sql.Identifier(_META)),
            (key, Jsonb(value)),
        )
