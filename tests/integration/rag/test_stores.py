"""One suite, run against both stores: LanceDB (a temp directory) and PostgreSQL + pgvector (pgserver or
TAILOR_PG_URL). Whatever one backend does, the other must do the same."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tailorlm.errors import TailorError
from tailorlm.rag.stores import Store, open_store
from tailorlm.rag.stores import lance as lance_mod
from tailorlm.rag.stores.lance import LanceStore
from tailorlm.rag.stores.pgvector import PgVectorStore
from tailorlm.rag.types import Document, StoredChunk

pytestmark = pytest.mark.integration

DIM = 8
Opener = Callable[[int], Store]


@pytest.fixture(params=["lance", "pgvector"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the test's store (at one location per test) with a given dim; closes and removes it afterwards."""
    opened: list[Store] = []
    if request.param == "lance":

        def open_lance(dim: int) -> Store:
            opened.append(LanceStore.open(tmp_path / "store", dim))
            return opened[-1]

        yield open_lance
        for s in opened:
            s.close()
        return

    import psycopg

    url = request.getfixturevalue("pg_url")
    prefix = f"test_{uuid.uuid4().hex[:12]}"  # the database may be shared (TAILOR_PG_URL): own tables only

    def open_pg(dim: int) -> Store:
        opened.append(PgVectorStore.open(url, dim, table_prefix=prefix))
        return opened[-1]

    yield open_pg
    for s in opened:
        s.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {prefix}_chunks, {prefix}_documents")


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener(DIM)


def unit(*xs: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def seeded_unit(key: str) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def make_doc(
    doc_id: str,
    *texts: str,
    title: str = "",
    heading: str = "",
    source: str | None = None,
    metadata: dict | None = None,
    vectors: list[np.ndarray] | None = None,
) -> tuple[Document, list[StoredChunk]]:
    """A document whose chunks are ``texts``, with deterministic vectors and int8 sentence matrices."""
    text = "\n".join(texts)
    doc = Document(doc_id=doc_id, source=source or f"{doc_id}.md", title=title, text=text, metadata=metadata or {})
    chunks, start = [], 0
    for i, t in enumerate(texts):
        rng = np.random.default_rng(i + len(doc_id))
        n = 1 + i % 3
        # The full int8 range, extremes included: the round trip must be bit-exact.
        sentences = rng.integers(-128, 128, size=(n, DIM), dtype=np.int8)
        sentences[0, 0], sentences[0, 1] = -128, 127
        vector = vectors[i] if vectors else seeded_unit(f"{doc_id}#{i}#{t}")
        chunks.append(
            StoredChunk(
                chunk_id=f"{doc_id}#{i}",
                doc_id=doc_id,
                doc_hash=doc.hash,
                source=doc.source,
                title=title,
                heading=heading,
                text=t,
                start=start,
                end=start + len(t),
                metadata=doc.metadata,
                vector=vector,
                sentences=sentences,
            )
        )
        start += len(t) + 1
    return doc, chunks


def write(store: Store, *docs: tuple[Document, list[StoredChunk]]) -> None:
    store.replace_documents([d for d, _ in docs], [c for _, cs in docs for c in cs])


def ids(hits: list[tuple[StoredChunk, float]]) -> list[str]:
    return [c.chunk_id for c, _ in hits]


def test_round_trip_is_exact(store: Store) -> None:
    meta = {"lang": "en", "year": 2024, "score": 0.5, "draft": False, "tags": ["a", "b"], "note": "naïve 'q' \\"}
    doc, chunks = make_doc(
        "guide.md",
        "first part",
        "second\tpart\nwith \\ and 'quotes'",
        "third",
        title="Guide",
        heading="Setup",
        metadata=meta,
    )
    write(store, (doc, chunks))

    assert store.document_hashes() == {"guide.md": doc.hash}
    assert store.count_chunks() == 3
    hits = store.dense_search(chunks[1].vector, k=10)
    assert len(hits) == 3
    got = {c.chunk_id: c for c, _ in hits}
    for want in chunks:
        c = got[want.chunk_id]
        assert (c.doc_id, c.doc_hash, c.source, c.title, c.heading) == (
            "guide.md",
            doc.hash,
            "guide.md.md",
            "Guide",
            "Setup",
        )
        assert (c.text, c.start, c.end, c.metadata) == (want.text, want.start, want.end, meta)
        assert doc.text[c.start : c.end] == c.text
        assert c.vector.dtype == np.float32 and c.vector.shape == (DIM,)
        np.testing.assert_allclose(c.vector, want.vector, rtol=1e-6)
        assert c.sentences.dtype == np.int8
        np.testing.assert_array_equal(c.sentences, want.sentences)


def test_dense_search_ranks_by_cosine(store: Store) -> None:
    write(
        store,
        make_doc("a", "x", vectors=[unit(1, 0)]),
        make_doc("b", "y", vectors=[unit(1, 1)]),
        make_doc("c", "z", vectors=[unit(0, 1)]),
        make_doc("d", "w", vectors=[unit(-1, 0)]),
    )
    hits = store.dense_search(unit(1, 0.1), k=3)
    assert ids(hits) == ["a#0", "b#0", "c#0"]
    for chunk, score in hits:
        assert score == pytest.approx(float(chunk.vector @ unit(1, 0.1)), abs=1e-5)
    assert store.dense_search(unit(1, 0), k=0) == []


def test_lexical_search_answers_natural_language_questions(store: Store) -> None:
    write(
        store,
        make_doc("france", "Paris is the capital and largest city of France.", title="France"),
        make_doc("cats", "Cats sleep for most of the day.", title="Pets"),
        make_doc("rivers", "The Seine flows through the city.", title="Waterways", heading="Europe"),
        make_doc("pumps", "A heat pump moves heat.", title="Heating"),
    )
    # An AND of all terms would match nothing here; ranking puts the document with most terms first.
    hits = store.lexical_search("What is the capital city of France?", k=10)
    assert ids(hits)[0] == "france#0"
    assert "rivers#0" in ids(hits)  # shares "city"
    assert "pumps#0" not in ids(hits)
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert ids(store.lexical_search("sleeping cat", k=5)) == ["cats#0"]  # stemming
    assert ids(store.lexical_search("europe waterways", k=5)) == ["rivers#0"]  # title and heading are indexed
    assert store.lexical_search("the of and", k=5) == []  # stop words only
    assert store.lexical_search("", k=5) == []
    assert store.lexical_search("capital' OR 1=1; -- \\ & | !(", k=5)[0][0].doc_id == "france"  # no injection


def test_filters(store: Store) -> None:
    write(
        store,
        make_doc("a", "solar power", source="s1", metadata={"lang": "en", "year": 2020, "ok": True, "q": "it's \\x"}),
        make_doc("b", "solar panels", source="s2", metadata={"lang": "de", "year": 2021, "ok": False, "tags": ["en"]}),
        make_doc("c", "solar farms", source="s2", metadata={"lang": "en", "year": 2021.0, "ok": 1}),
        make_doc("d", "solar energy", source="s3", metadata={}),
    )
    q = seeded_unit("query")

    def both(where: dict) -> set[str]:
        dense = {c.doc_id for c, _ in store.dense_search(q, k=10, where=where)}
        lexical = {c.doc_id for c, _ in store.lexical_search("solar", k=10, where=where)}
        assert dense == lexical, where
        return dense

    assert both({}) == {"a", "b", "c", "d"}
    assert both({"lang": "en"}) == {"a", "c"}  # a list value ("tags": ["en"]) is not equal to a scalar
    assert both({"lang": ["de", "fr"]}) == {"b"}
    assert both({"year": 2021}) == {"b", "c"}  # 2021 == 2021.0, as JSON numbers
    assert both({"year": [2020, 1999]}) == {"a"}
    assert both({"ok": True}) == {"a"}  # true is not 1
    assert both({"ok": 1}) == {"c"}
    assert both({"q": "it's \\x"}) == {"a"}
    assert both({"lang": "en", "year": 2021}) == {"c"}  # ANDed
    assert both({"source": "s2"}) == {"b", "c"}
    assert both({"doc_id": ["a", "d"]}) == {"a", "d"}
    assert both({"source": "s2", "lang": "en"}) == {"c"}
    assert both({"lang": []}) == set()
    assert both({"missing": "x"}) == set()
    with pytest.raises(TailorError):
        store.dense_search(q, k=3, where={"tags": [["en"]]})


def test_filter_applies_before_top_k(store: Store) -> None:
    # 40 near chunks and 4 far ones; only the far ones pass the filter, and all 4 must come back.
    near = [make_doc(f"n{i}", f"common words here {i}", metadata={"kind": "near"}) for i in range(40)]
    far = [
        make_doc(f"f{i}", f"rare common {i}", metadata={"kind": "far"}, vectors=[unit(-1, 0.1 * i)]) for i in range(4)
    ]
    write(store, *near, *far)
    query = unit(1, 0)
    dense = store.dense_search(query, k=4, where={"kind": "far"})
    assert sorted(ids(dense)) == ["f0#0", "f1#0", "f2#0", "f3#0"]
    lexical = store.lexical_search("common words", k=4, where={"kind": "far"})
    assert sorted(ids(lexical)) == ["f0#0", "f1#0", "f2#0", "f3#0"]


def test_replace_and_delete_never_leave_stale_chunks(store: Store) -> None:
    write(store, make_doc("a", "apples grow on trees", "orchards in autumn"), make_doc("b", "bananas are yellow"))
    assert ids(store.lexical_search("apples", k=5)) == ["a#0"]
    assert store.count_chunks() == 3

    new_a, new_chunks = make_doc("a", "pears replaced the fruit")
    store.replace_documents([new_a], new_chunks)
    assert store.lexical_search("apples orchards", k=5) == []
    assert ids(store.lexical_search("pears", k=5)) == ["a#0"]
    assert store.count_chunks() == 2
    assert store.document_hashes()["a"] == new_a.hash
    assert {c.text for c, _ in store.dense_search(new_chunks[0].vector, k=10)} == {
        "pears replaced the fruit",
        "bananas are yellow",
    }

    store.optimize()  # folds the rows into the indexes; results must not change
    assert ids(store.lexical_search("pears", k=5)) == ["a#0"]
    assert store.lexical_search("apples", k=5) == []

    store.delete_documents(["a", "nope"])
    assert store.lexical_search("pears", k=5) == []
    assert ids(store.dense_search(new_chunks[0].vector, k=10)) == ["b#0"]
    assert store.document_hashes().keys() == {"b"}
    assert store.count_chunks() == 1
    write(store, make_doc("a", "apples again"))  # after an optimize(): rows added past the index are searched too
    assert ids(store.lexical_search("apples", k=5)) == ["a#0"]


def test_read_chunks_by_id_and_all(store: Store) -> None:
    a, a_chunks = make_doc("a", "apples grow on trees", "orchards in autumn")
    write(store, (a, a_chunks), make_doc("b", "bananas are yellow"))
    got = {c.chunk_id: c for c in store.read_chunks(["a#1", "b#0", "a#9", "a#1"])}
    assert sorted(got) == ["a#1", "b#0"]  # unknown ids left out, duplicates once
    assert (got["a#1"].text, got["a#1"].start, got["a#1"].end) == (
        "orchards in autumn",
        a_chunks[1].start,
        a_chunks[1].end,
    )
    np.testing.assert_allclose(got["a#1"].vector, a_chunks[1].vector, rtol=1e-6)
    assert store.read_chunks([]) == []
    assert sorted(c.chunk_id for c in store.read_chunks()) == ["a#0", "a#1", "b#0"]
    write(store, make_doc("a", "pears now"))  # replaced: the old chunks are gone from reads too
    assert sorted(c.text for c in store.read_chunks()) == ["bananas are yellow", "pears now"]


def test_crash_between_chunks_and_records(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks written without their record (a crash in between) stay invisible; the old version stays whole."""
    old = make_doc("a", "old alpha text", "old beta text")
    write(store, old)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(store, "_write_records", crash)
    new, new_chunks = make_doc("a", "new gamma text")
    fresh, fresh_chunks = make_doc("z", "zeta text")
    with pytest.raises(RuntimeError, match="killed"):
        store.replace_documents([new, fresh], new_chunks + fresh_chunks)
    monkeypatch.undo()

    assert store.document_hashes() == {"a": old[0].hash}  # z is absent, so the next ingest indexes it
    assert store.count_chunks() == 2
    assert sorted(ids(store.lexical_search("text", k=10))) == ["a#0", "a#1"]
    assert sorted(c.text for c, _ in store.dense_search(new_chunks[0].vector, k=10)) == [
        "old alpha text",
        "old beta text",
    ]
    assert store.lexical_search("zeta gamma", k=10) == []
    assert store.dense_search(fresh_chunks[0].vector, k=10, where={"doc_id": "z"}) == []

    store.optimize()  # removes the orphans where the backend can have any
    if isinstance(store, LanceStore):
        assert store._chunks.count_rows() == 2
    write(store, (new, new_chunks), (fresh, fresh_chunks))  # the next ingest
    assert sorted(ids(store.lexical_search("text", k=10))) == ["a#0", "z#0"]
    assert store.count_chunks() == 2


def test_rewriting_an_unchanged_document_does_not_duplicate(store: Store) -> None:
    doc = make_doc("a", "same text", "more text")
    write(store, doc)
    write(store, doc)
    assert store.count_chunks() == 2
    assert sorted(ids(store.dense_search(doc[1][0].vector, k=10))) == ["a#0", "a#1"]


def test_reopen_keeps_data_and_checks_dim(opener: Opener) -> None:
    first = opener(DIM)
    doc = make_doc("a", "persistent words")
    write(first, doc)
    first.optimize()
    first.close()
    first.close()  # idempotent

    again = opener(DIM)
    assert again.document_hashes() == {"a": doc[0].hash}
    assert ids(again.lexical_search("persistent", k=3)) == ["a#0"]
    again.close()
    with pytest.raises(TailorError, match=f"{DIM}-d vectors but the embedder makes {DIM + 1}-d"):
        opener(DIM + 1)


def test_empty_store_and_idempotent_maintenance(store: Store) -> None:
    assert store.count_chunks() == 0
    assert store.document_hashes() == {}
    assert store.dense_search(unit(1), k=5) == []
    assert store.lexical_search("anything", k=5) == []
    store.optimize()
    store.optimize()
    store.replace_documents([], [])
    store.delete_documents([])
    store.delete_documents(["missing"])
    write(store, make_doc("empty"))  # a document with no chunks still gets its record
    assert store.document_hashes().keys() == {"empty"}
    assert store.count_chunks() == 0
    with pytest.raises(TailorError, match="dims"):
        store.dense_search(np.ones(DIM + 2, dtype=np.float32), k=1)


def test_search_through_ann_indexes(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the index threshold (lowered here) the ANN path must still honour k, filters and exact scores."""
    monkeypatch.setattr(lance_mod, "ANN_MIN_ROWS", 300)
    docs = [make_doc(f"d{i}", f"chunk number {i}", metadata={"bucket": i % 50}) for i in range(400)]
    write(store, *docs)
    store.optimize()
    if isinstance(store, PgVectorStore):
        # Make the planner take HNSW on a table this small, even with a filter: the filtered query then comes up
        # short (HNSW yields ef_search rows, then filters) and must fall back to an exact scan.
        store._conn.execute("SET enable_seqscan = off")
        store._conn.execute("SET enable_bitmapscan = off")
    target = docs[123][1][0]
    hits = store.dense_search(target.vector, k=20)
    assert len(hits) == 20 and hits[0][0].chunk_id == "d123#0" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    filtered = store.dense_search(target.vector, k=8, where={"bucket": 7})
    assert sorted(ids(filtered)) == sorted(f"d{i}#0" for i in range(7, 400, 50))
    assert ids(store.lexical_search("number 321", k=1)) == ["d321#0"]


def test_open_store_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_store(str(tmp_path / "lance"), DIM)
    assert isinstance(s, LanceStore) and s.dim == DIM
    s.close()
    seen: list[str] = []
    monkeypatch.setattr(PgVectorStore, "open", classmethod(lambda cls, url, dim: seen.append(url)))
    open_store("postgresql://u@h/db", DIM)
    open_store("postgres://u@h/db", DIM)
    assert seen == ["postgresql://u@h/db", "postgres://u@h/db"]
    with pytest.raises(TailorError, match="no LanceDB store"):
        LanceStore.open(tmp_path / "absent", DIM, create=False)
