from collections.abc import Iterator, Sequence

import pytest

from tailorlm.eval.metrics.qa import normalize_answer
from tailorlm.models.engines.base import Completion, GenerationParams, Message, Request, StreamChunk, Usage
from tailorlm.prompting.consistency import DEFAULT_TEMPERATURE, Vote, self_consistency, vote
from tailorlm.prompting.extract import make_extractor, normalize_number

pytestmark = pytest.mark.unit


def test_majority_wins() -> None:
    v = vote(["18", "17", "18", "18", "20"])
    assert (v.answer, v.count, v.total) == ("18", 3, 5)
    assert v.agreement == pytest.approx(0.6)
    assert v.distribution == {"18": 3, "17": 1, "20": 1}
    assert list(v.distribution) == ["18", "17", "20"]  # count desc, then first appearance


def test_ties_go_to_the_first_appearance() -> None:
    assert vote(["b", "a", "a", "b"]).answer == "b"
    assert vote(["a", "b", "b", "a"]).answer == "a"
    assert list(vote(["c", "a", "b"]).distribution) == ["c", "a", "b"]


def test_none_counts_in_total_but_never_wins() -> None:
    v = vote([None, None, None, "7"])
    assert (v.answer, v.count, v.total, v.agreement) == ("7", 1, 4, 0.25)
    assert v.distribution == {"7": 1}
    nothing = vote([None, None])
    assert (nothing.answer, nothing.count, nothing.total, nothing.agreement) == (None, 0, 2, 0.0)
    assert nothing.distribution == {}


def test_numeric_normalizer_merges_equal_numbers_and_keeps_the_first_surface_form() -> None:
    v = vote(["18.0", "17", "18", "$18", "17"], normalize=normalize_number)
    assert v.distribution == {"18": 3, "17": 2}
    assert (v.answer, v.count) == ("18.0", 3)
    assert vote(["18.0", "18"]).distribution == {"18.0": 1, "18": 1}  # no normalizer: strings differ


def test_text_normalizer_merges_surface_variants() -> None:
    v = vote(["The Eiffel Tower.", "Louvre", "eiffel tower"], normalize=normalize_answer)
    assert v.distribution == {"eiffel tower": 2, "louvre": 1}
    assert v.answer == "The Eiffel Tower."


def test_empty_vote_is_an_error() -> None:
    with pytest.raises(ValueError):
        vote([])


def test_vote_agreement_is_derived() -> None:
    assert Vote(answer="x", count=2, total=8, distribution={"x": 2}).agreement == 0.25


class CannedEngine:
    """A test double for a model: answers row i with texts[i % len(texts)] and records every call."""

    name = "canned"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.calls: list[tuple[list[Request], GenerationParams]] = []

    def generate(
        self, requests: Sequence[str | Sequence[Message] | Request], params: GenerationParams | None = None
    ) -> list[Completion]:
        self.calls.append(([Request.of(r) for r in requests], params or GenerationParams()))
        return [
            Completion(
                text=self.texts[i % len(self.texts)],
                finish_reason="stop",
                usage=Usage(prompt_tokens=10, completion_tokens=3),
            )
            for i in range(len(requests))
        ]

    def stream(
        self, request: str | Sequence[Message] | Request, params: GenerationParams | None = None
    ) -> Iterator[StreamChunk]:
        raise NotImplementedError


def test_self_consistency_samples_n_chains_per_request_in_one_call() -> None:
    engine = CannedEngine(["The answer is 18.", "The answer is 18.0", "The answer is 17.", "no idea"])
    results = self_consistency(
        engine,
        ["q1", "q2"],
        GenerationParams(max_new_tokens=32),
        n=4,
        extract=make_extractor("after_marker"),
        seed=3,
        normalize=normalize_number,
    )
    assert len(engine.calls) == 1
    requests, params = engine.calls[0]
    assert [r.messages[0]["content"] for r in requests] == ["q1"] * 4 + ["q2"] * 4  # type: ignore[index]
    assert params.temperature == DEFAULT_TEMPERATURE  # greedy params were turned into sampling
    assert params.seed == 3 and params.max_new_tokens == 32
    for result in results:
        assert len(result.completions) == 4
        assert result.answer == "18"
        assert result.vote.distribution == {"18": 2, "17": 1}
        assert result.vote.total == 4
        assert result.usage_total == Usage(prompt_tokens=40, completion_tokens=12)


def test_self_consistency_keeps_a_sampling_temperature() -> None:
    engine = CannedEngine(["x"])
    self_consistency(engine, ["q"], GenerationParams(temperature=1.2, top_p=0.9), n=2, extract=lambda t: t)
    assert engine.calls[0][1].temperature == 1.2 and engine.calls[0][1].top_p == 0.9
    with pytest.raises(ValueError):
        self_consistency(engine, ["q"], GenerationParams(), n=0, extract=lambda t: t)
