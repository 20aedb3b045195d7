"""The default model as a pairwise judge on 20 real AlpacaEval pairs (GPT-4 vs text-davinci-003).

Behaviour, not golden numbers: the report is complete and well-formed, rates are rates, the trivial judges
are computed on the same pairs. How good a 135M judge is goes in docs/judge.md (benchmarks/judge_agreement.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tailorlm.eval.judge_agreement import (
    ANNOTATIONS_FILE,
    agreement,
    evaluate_judge,
    length_winners,
    load_alpaca_eval_annotations,
    sample_pairs,
)
from tailorlm.models.engines.hf import HFEngine

pytestmark = pytest.mark.slow


def test_default_model_judges_alpaca_eval_pairs(shared_data: Path) -> None:
    pairs = load_alpaca_eval_annotations(shared_data / ANNOTATIONS_FILE)
    assert len(pairs) > 780  # 805 minus the identical-output items
    items = sample_pairs(pairs, 20, seed=0)
    assert sample_pairs(pairs, 20, seed=0) == items

    report = evaluate_judge(HFEngine("default"), items, mode="logprob", max_output_tokens=128)

    assert report["n"] == 20 and report["summary"]["n"] == 20
    for key in ("agreement", "consistency", "position_bias"):
        assert 0.0 <= report[key] <= 1.0
    assert report["summary"]["invalid_rate"] == 0.0  # logprob mode always yields a verdict
    assert report["agreement"] <= report["consistency"]  # inconsistent items count as wrong
    assert 0.0 <= report["debiased"]["agreement"] <= 1.0 and report["debiased"]["consistency"] == 1.0
    length = agreement(length_winners(items), [it["label"] for it in items])
    assert length["agreement"] > 0.7  # AlpacaEval's GPT-4 judge favours the longer answer
