"""RAFT records from answers alone (rag/sft_data.py): where the gold passage is searched (retrieved hits, their
neighbours, an index scan), the counts, and the refusal, with an in-memory store and a word-overlap retriever."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tailorlm.errors import DataError
from tailorlm.rag.evaluation import RetrievalQuery
from tailorlm.rag.sft_data import GoldFinder, check_gold_share, gold_summary, make_sft_records
from tailorlm.rag.types import Hit, StoredChunk

pytestmark = pytest.mark.unit

TEXTS = {
    "a": ["Alpha one two three.", "Four five six seven.", "Eight nine ten eleven."],
    "b": ["Beta red green blue.", "Cyan magenta yellow black."],
}


def chunk(doc: str, i: int) -> StoredChunk:
    texts = TEXTS[doc]
    start = sum(len(t) + 1 for t in texts[:i])
    return StoredChunk(
        f"{doc}#{i}", doc, "h", f"{doc}.txt", doc, "", texts[i], start, start + len(texts[i]), {},
        np.zeros(4, dtype=np.float32), np.zeros((1, 4), dtype=np.int8),
    )  # fmt: skip


CHUNKS = [chunk(d, i) for d, ts in TEXTS.items() for i in range(len(ts))]


class Store:
    dim = 4

    def __init__(self) -> None:
        self.reads: list[Any] = []

    def read_chunks(self, chunk_ids: list[str] | None = None) -> list[StoredChunk]:
        self.reads.append(None if chunk_ids is None else sorted(chunk_ids))
        return [c for c in CHUNKS if chunk_ids is None or c.chunk_id in chunk_ids]

    def count_chunks(self) -> int:
        return len(CHUNKS)


class Retriever:
    """Ranks chunks by words shared with the question; retrieves only chunks sharing at least one."""

    def __init__(self) -> None:
        self.store = Store()

    def retrieve(self, question: str, k: int = 5, **overrides: object) -> list[Hit]:
        words = set(question.lower().split())
        scored = [(len(words & set(c.text.lower().rstrip(".").split())), c) for c in CHUNKS]
        ranked = sorted((s for s in scored if s[0]), key=lambda s: -s[0])[:k]
        return [Hit(c, float(s), rank=i + 1) for i, (s, c) in enumerate(ranked)]


def q(question: str, *answers: str) -> RetrievalQuery:
    return RetrievalQuery(question, question, list(answers))


def test_neighbours_of_hits_are_searched_and_the_scan_comes_last() -> None:
    r = Retriever()
    finder = GoldFinder(r.store)
    # Retrieved a#0; the answer runs on into a#1, which only the neighbour lookup brings in.
    found = finder.find(["two three. Four five"], r.retrieve("alpha"))
    assert found is not None
    match, chunks, scanned = found
    assert (match.level, match.chunk_ids, scanned) == ("neighbours", ("a#0", "a#1"), False)
    assert set(match.chunk_ids) <= set(chunks)  # the chunks to show come back with the match
    assert r.store.reads == [["a#1"]]  # a#0's neighbours: a#1 (there is no a#-1); no scan needed
    # Nothing retrieved holds it: the scan finds it.
    found = finder.find(["magenta yellow"], r.retrieve("alpha"))
    assert found is not None and found[0].chunk_ids == ("b#1",) and found[2] is True
    assert r.store.reads[-1] is None
    assert finder.find(["not anywhere"], r.retrieve("alpha")) is None


def test_records_counts_and_the_gold_passage() -> None:
    queries = [
        q("alpha", "Four five six"),  # exact, in the neighbour a#1
        q("beta", "RED, green"),  # normalized
        q("alpha", "two three. Four five"),  # neighbours
        q("nothing", "zebra"),  # unmatched
        q("alpha"),  # no answer
        RetrievalQuery("ids", "beta", ["Beta"], doc_ids=["b"]),  # gold ids given
    ]
    records, counts = make_sft_records(Retriever(), queries, distractors=1, p_oracle=1.0)  # type: ignore[arg-type]
    assert counts == {
        "written": 4, "with_oracle": 4, "skipped_no_gold": 1, "skipped_no_answer": 1, "gold_given": 1,
        "matched_exact": 1, "matched_normalized": 1, "matched_neighbours": 1, "matched_overlap": 0,
        "matched_by_scan": 0, "unmatched": 1,
    }  # fmt: skip
    first = records[0]
    assert first["metadata"]["gold"] == "exact" and first["metadata"]["gold_chunk_id"] == "a#1"
    assert "Four five six seven." in first["messages"][0]["content"]  # the neighbour shown as the oracle
    assert first["messages"][1]["content"].startswith("Four five six [")
    # A chunk holding part of a cross-boundary answer is not a distractor.
    across = records[2]["metadata"]
    assert across["gold"] == "neighbours" and across["gold_chunk_id"] == "a#0" and "a#1" not in across["chunk_ids"]
    assert records[3]["metadata"]["gold"] == "ids"
    assert gold_summary(counts) == (
        "gold passages: 1 by gold ids; 3 by their answer (1 exact, 1 normalized, 1 neighbours); "
        "1 answers not found in the documents (skipped)"
    )


def test_refuses_only_when_almost_none_match() -> None:
    base = {f"matched_{lv}": 0 for lv in ("exact", "normalized", "neighbours", "overlap")}
    check_gold_share(base | {"unmatched": 0})  # no answer-only records: nothing to judge
    check_gold_share(base | {"matched_exact": 1, "unmatched": 19})  # 5%: thin, but trains
    with pytest.raises(DataError, match="only 1 of 21"):
        check_gold_share(base | {"matched_exact": 1, "unmatched": 20})
    with pytest.raises(DataError, match="only 0 of 3"):
        make_sft_records(Retriever(), [q("alpha", "zebra")] * 3)  # type: ignore[arg-type]
