"""Self-consistency on a tiny random model through the real `hf` engine: shapes, vote bookkeeping, seeding."""

from pathlib import Path

import pytest

from tailorlm.models.engines.base import GenerationParams
from tailorlm.models.engines.hf import HFEngine
from tailorlm.models.load import load_model
from tailorlm.prompting.consistency import self_consistency

pytestmark = pytest.mark.integration

QUESTIONS = ["What is 2 + 3?", "A farmer has 12 cows and sells 5. How many are left? Let's think step by step."]
PARAMS = GenerationParams(max_new_tokens=8)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> HFEngine:
    return HFEngine(load_model(str(tiny_model_dir)), batch_size=8)


def _texts(results: list) -> list[list[str]]:
    return [[c.text for c in r.completions] for r in results]


def test_n_chains_per_request_and_a_full_distribution(engine: HFEngine) -> None:
    # Identity extraction: every chain casts a vote, so the distribution must account for all n of them.
    results = self_consistency(engine, QUESTIONS, PARAMS, n=3, extract=lambda text: text, seed=0)
    assert len(results) == len(QUESTIONS)
    for result in results:
        assert len(result.completions) == 3
        assert result.vote.total == 3
        assert sum(result.vote.distribution.values()) == 3
        assert result.answer == result.vote.answer and result.answer in result.vote.distribution
        assert result.usage_total.completion_tokens == sum(c.usage.completion_tokens for c in result.completions)
    # A random model sampled at T = 0.7 over its whole vocabulary: the chains of one request differ.
    assert len(set(_texts(results)[0])) > 1


def test_same_seed_reproduces_the_chains(engine: HFEngine) -> None:
    first = self_consistency(engine, QUESTIONS, PARAMS, n=3, extract=lambda text: text, seed=7)
    again = self_consistency(engine, QUESTIONS, PARAMS, n=3, extract=lambda text: text, seed=7)
    other = self_consistency(engine, QUESTIONS, PARAMS, n=3, extract=lambda text: text, seed=8)
    assert _texts(first) == _texts(again)
    assert [r.vote for r in first] == [r.vote for r in again]
    assert _texts(first) != _texts(other)


def test_chains_beyond_one_batch_are_not_copies(tiny_model_dir: Path) -> None:
    small_batches = HFEngine(load_model(str(tiny_model_dir)), batch_size=2)
    [result] = self_consistency(small_batches, ["hi"], PARAMS, n=4, extract=lambda text: text, seed=0)
    texts = [c.text for c in result.completions]
    assert texts[:2] != texts[2:]
