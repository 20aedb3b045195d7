"""A reward model in the judge slot: judge_pairwise's verdict type, no position bias, margins r(a) - r(b)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from tailorlm.eval.judge import summarize_pairwise
from tailorlm.train.align.scorer import reward_pairwise

pytestmark = pytest.mark.unit


class LengthReward:
    """Scores an answer by its length: enough to know every verdict in advance."""

    def score(self, prompts: Sequence[Sequence[Mapping[str, str]]], completions: Sequence[str]) -> list[float]:
        assert all(p[-1]["role"] == "user" for p in prompts)
        return [float(len(c)) for c in completions]


def test_reward_verdicts_match_the_scores_in_both_orders() -> None:
    items = [
        {"instruction": "q1", "output_a": "long answer", "output_b": "short"},
        {"instruction": "q2", "output_a": "x", "output_b": "longer"},
        {"instruction": "q3", "output_a": "same", "output_b": "size"},
    ]
    verdicts = reward_pairwise(LengthReward(), items)  # type: ignore[arg-type]
    assert [v.winner for v in verdicts] == ["a", "b", "tie"]
    assert all(v.consistent for v in verdicts)  # a reward model has no position to be biased by
    assert verdicts[0].margin == pytest.approx(11 - 5) and verdicts[1].margin == pytest.approx(1 - 6)
    summary = summarize_pairwise(verdicts)
    assert summary["win_rate_a"] == pytest.approx(1 / 3) and summary["consistency"] == 1.0
