"""Fusion, max-sim rescoring and MMR on a tiny in-memory store (the real stores have their own suite); windows of
neighbours are tested in test_expansion_and_hits.py."""

from __future__ import annotations

import numpy as np
import pytest

from tailorlm.rag.retrieval import RetrievalConfig, Retriever, maxsim, mmr, quantize_sentences
from tailorlm.rag.types import Hit, StoredChunk

pytestmark = pytest.mark.unit


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def chunk(cid: str, sentences: list[np.ndarray], text: str = "") -> StoredChunk:
    s = np.stack(sentences)
    mean = s.mean(0)
    return StoredChunk(
        cid,
        cid.split("#")[0],
        "h",
        "src",
        "t",
        "",
        text or cid,
        0,
        1,
        {},
        mean / np.linalg.norm(mean),
        quantize_sentences(s),
    )


class ListStore:
    """Exact search over a list: enough to test the retriever's own logic."""

    dim = 3

    def __init__(self, chunks: list[StoredChunk], lexical: dict[str, float]) -> None:
        self.chunks, self.lexical = chunks, lexical

    def dense_search(self, vector, k, where=None):
        scored = sorted(((c, float(c.vector @ vector)) for c in self.chunks), key=lambda x: -x[1])
        return scored[:k]

    def lexical_search(self, query, k, where=None):
        scored = [(c, self.lexical[c.chunk_id]) for c in self.chunks if c.chunk_id in self.lexical]
        return sorted(scored, key=lambda x: -x[1])[:k]


def test_maxsim_uses_the_best_sentence_not_the_mean() -> None:
    q = unit(1, 0, 0)
    c = chunk("a#0", [unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])
    assert maxsim(q, c) == pytest.approx(1.0, abs=0.01)
    assert float(c.vector @ q) == pytest.approx(1 / np.sqrt(3), abs=0.01)


def test_quantized_sentences_round_trip_within_a_percent() -> None:
    v = np.random.default_rng(0).normal(size=(5, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    back = quantize_sentences(v).astype(np.float32) / 127
    assert np.abs((back * v).sum(1) - 1).max() < 0.01


def test_hybrid_fusion_combines_both_signals() -> None:
    q = unit(1, 0, 0)
    dense_only = chunk("dense#0", [unit(1, 0.1, 0)])
    lexical_only = chunk("lex#0", [unit(0, 1, 0)])
    both = chunk("both#0", [unit(1, 0.3, 0)])
    store = ListStore([dense_only, lexical_only, both], {"lex#0": 9.0, "both#0": 8.0, "dense#0": 0.5})
    r = Retriever(store, lambda texts: np.stack([q] * len(texts)), RetrievalConfig(neighbours=0))
    hits = r.retrieve("q", k=3)
    assert hits[0].chunk.chunk_id == "both#0"
    assert [h.rank for h in hits] == [1, 2, 3]
    assert set(hits[0].scores) == {"dense", "lexical"}
    assert r.retrieve("q", k=1, mode="dense")[0].chunk.chunk_id == "dense#0"
    assert r.retrieve("q", k=1, mode="lexical")[0].chunk.chunk_id == "lex#0"
    # Ranks alone (RRF) cannot see that "both" is close to the top in each list: z-scores can.
    assert r.retrieve("q", k=1, fusion="rrf")[0].chunk.chunk_id != "both#0"


def test_candidate_missing_from_a_cut_lexical_list_gets_its_floor() -> None:
    q = unit(1, 0, 0)
    a, b, c = chunk("a#0", [unit(1, 0, 0)]), chunk("b#0", [unit(0.9, 0.4, 0)]), chunk("c#0", [unit(0.8, 0.6, 0)])
    store = ListStore([a, b, c], {"b#0": 3.0, "c#0": 2.0})
    hits = Retriever(store, lambda t: np.stack([q]), RetrievalConfig(candidates=2, neighbours=0)).retrieve("q", k=2)
    assert {h.chunk.chunk_id: h.scores["lexical"] for h in hits}["a#0"] == 2.0  # list cut at 2: at most the last


def test_candidate_missing_from_a_short_lexical_list_matched_nothing() -> None:
    q = unit(1, 0, 0)
    a, b = chunk("a#0", [unit(1, 0, 0)]), chunk("b#0", [unit(0.9, 0.4, 0)])
    store = ListStore([a, b], {"b#0": 3.0})  # only b matched a query term
    hits = Retriever(store, lambda t: np.stack([q]), RetrievalConfig(neighbours=0)).retrieve("q", k=2)
    assert {h.chunk.chunk_id: h.scores["lexical"] for h in hits}["a#0"] == 0.0


def test_mmr_prefers_a_novel_passage_over_a_near_duplicate() -> None:
    a = chunk("a#0", [unit(1, 0, 0)])
    dup = chunk("dup#0", [unit(1, 0.01, 0)])
    other = chunk("o#0", [unit(0, 1, 0)])
    hits = [Hit(a, 1.0), Hit(dup, 0.99), Hit(other, 0.5)]
    assert [h.chunk.chunk_id for h in mmr(hits, 0.5, 2)][:2] == ["a#0", "o#0"]
    assert [h.chunk.chunk_id for h in mmr(hits, 1.0, 2)][:2] == ["a#0", "dup#0"]


def test_empty_store_returns_nothing() -> None:
    r = Retriever(ListStore([], {}), lambda t: np.stack([unit(1, 0, 0)]), RetrievalConfig(neighbours=0))
    assert r.retrieve("anything") == []
