"""Recommending a rung from fake eval runs written in tmp_path (docs/eval-runs.md format)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tailorlm.core.io import atomic_write_json, atomic_write_text
from tailorlm.core.run import Run
from tailorlm.core.task import BudgetSpec
from tailorlm.ladder.recommend import BUILD_TIE_S, Recommendation, fmt_p, fmt_signed, recommend
from tailorlm.ladder.result import BuildCost, Estimate, Quality, RungResult, ServeCost

pytestmark = pytest.mark.unit

N = 60


def pattern(*residues: int, plus: tuple[int, ...] = (), minus: tuple[int, ...] = ()) -> list[float]:
    """Per-example scores: 1 where ``i % 5`` is in ``residues`` or ``i`` in ``plus``, 0 where ``i`` in ``minus``."""
    return [0.0 if i in minus else 1.0 if (i % 5 in residues or i in plus) else 0.0 for i in range(N)]


# A ladder whose outcome is known by construction (N = 60 examples):
ZERO = pattern(0)  # 0.200
FEW = pattern(0, 1)  # 0.400: clearly beats zero-shot (+12 examples, none lost)
COT = pattern(0, minus=(0,))  # 0.183: one example lost, does not beat zero-shot
RAG = pattern(0, 1, 2)  # 0.600: clearly beats zero-shot
RAG_LORA = pattern(0, 1, 2, plus=(3, 8), minus=(0,))  # 0.617: +2 −1 vs RAG, indistinguishable from it


def make_rung(
    root: Path,
    name: str,
    scores: list[float] | None,
    *,
    title: str | None = None,
    family: str = "prompting",
    build_s: float | None = 0.0,
    latency: float | None = 0.5,
    status: str = "complete",
    error: str | None = None,
    reason: str | None = None,
    canaries: dict[str, Any] | None = None,
    estimate: tuple[float, float] | None = None,
    actual_s: float | None = None,
    metric: str = "f1",
    higher_is_better: bool = True,
    predictions: bool = True,
    cached: bool = False,
    secondary: dict[str, list[float]] | None = None,
) -> RungResult:
    """A RungResult and, for a complete rung, its eval run (run.json, metrics.json, predictions.jsonl)."""
    title = title or name.replace("-", " ").capitalize()
    common: dict[str, Any] = {
        "name": name, "title": title, "family": family, "status": status, "error": error, "reason": reason,
        "cached": cached, "actual_s": actual_s,
        "estimate": Estimate(build_s=estimate[0], eval_s=estimate[1], basis="fake") if estimate else None,
    }  # fmt: skip
    if status != "complete" or scores is None:
        return RungResult(**common)
    x = np.asarray(scores, dtype=float)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    q = Quality(metric=metric, value=float(x.mean()), low=float(x.mean() - half), high=float(x.mean() + half), n=N)
    run = Run.create(f"eval-{name}", root=root, kind="eval", seed=0)
    records = [
        {"id": f"q{i}", "input": f"Question {i}?", "reference": [f"answer {i}"], "prediction": f"{name} says {s:g}",
         "scores": {metric: s, **{m: v[i] for m, v in (secondary or {}).items()}},
         "latency_s": latency or 0.5, "prompt_tokens": 100, "completion_tokens": 5}
        for i, s in enumerate(scores)
    ]  # fmt: skip
    if predictions:
        atomic_write_text(run.path / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    metrics = {
        "task": "qa-demo", "system": name, "n": len(scores), "seed": 0, "primary_metric": metric,
        "metrics": {metric: {"value": q.value, "low": q.low, "high": q.high, "higher_is_better": higher_is_better}},
        "cost": {"wall_s": 10.0, "prompt_tokens": 100 * N, "completion_tokens": 5 * N, "tokens_per_s": 20.0,
                 "latency_p50_s": latency, "peak_rss_mb": 900},
        **({"canaries": canaries} if canaries else {}),
    }  # fmt: skip
    atomic_write_json(run.path / "metrics.json", metrics)
    run.finish("complete")
    return RungResult(
        **common,
        system=str(run.path / "artifacts" / "system.yaml"),
        eval_run=str(run.path),
        quality=q,
        metrics={metric: q},
        build=BuildCost(wall_s=build_s, tokens=1000, peak_rss_mb=900.0, disk_mb=3.0) if build_s is not None else None,
        serve=ServeCost(latency_p50_s=latency, tokens_per_s=20.0, prompt_tokens_per_query=100.0, eval_wall_s=10.0),
        canaries=canaries,
    )


def typical_ladder(root: Path) -> list[RungResult]:
    return [
        make_rung(root, "zero-shot", ZERO, build_s=0.0, latency=0.30),
        make_rung(root, "few-shot", FEW, build_s=0.2, latency=0.40),
        make_rung(root, "chain-of-thought", COT, title="Chain-of-thought", latency=1.20),
        make_rung(root, "rag", RAG, title="RAG", family="rag", build_s=30.0, latency=0.80),
        make_rung(root, "rag-few-shot", None, title="RAG + few-shot", status="skipped", reason="no train split"),
        make_rung(root, "lora", None, title="LoRA", family="fine-tuning", status="failed", error="CUDA OOM: boom"),
        make_rung(root, "rag-lora", RAG_LORA, title="RAG + LoRA", family="fine-tuning", build_s=600.0, latency=0.9),
    ]


@pytest.fixture
def ladder(tmp_path: Path) -> list[RungResult]:
    return typical_ladder(tmp_path / "runs")


def step(rec: Recommendation, rung: str) -> str:
    return next(s.sentence for s in rec.steps if s.rung == rung)


def test_typical_ladder_picks(ladder: list[RungResult]) -> None:
    rec = recommend(ladder, primary="f1")
    assert rec.best_quality.rung == "rag-lora"
    assert rec.equivalent == ["rag", "rag-lora"]  # RAG is within the CI of the best; nothing else is
    # RAG builds in 30 s vs 600 s for RAG + LoRA: the cheapest of the two, hence the one shipped.
    assert rec.cheapest_equivalent.rung == "rag" and rec.chosen == "rag"
    assert rec.system == next(r.system for r in ladder if r.name == "rag")
    assert rec.limited_compute.rung == "rag"  # the best that needs no training
    assert rec.lowest_latency.rung == "rag"  # 0.80 s < 0.90 s among the two equivalent rungs
    assert rec.baseline == "zero-shot" and rec.higher_is_better
    # Reasons carry the figures.
    assert "RAG + LoRA scores f1 0.617 [" in rec.best_quality.reason
    assert "statistically indistinguishable from it: RAG: −0.017 [" in rec.best_quality.reason
    assert "RAG is the cheapest rung statistically indistinguishable from the best (RAG + LoRA)" in rec.reason
    assert "builds in 30.0 s" in rec.cheapest_equivalent.reason and "(vs 600 s" in rec.cheapest_equivalent.reason
    assert "p50 0.80 s" in rec.lowest_latency.reason


def test_comparisons_are_rung_minus_best(ladder: list[RungResult]) -> None:
    rec = recommend(ladder, primary="f1")
    assert set(rec.comparisons) == {"zero-shot", "few-shot", "chain-of-thought", "rag", "rag-lora"}
    assert all(d.other == "rag-lora" for d in rec.comparisons.values())
    assert rec.comparisons["rag-lora"].diff == 0.0
    assert rec.comparisons["zero-shot"].diff == pytest.approx(0.2 - RAG_LORA_MEAN)
    assert rec.comparisons["zero-shot"].high < 0  # clearly worse than the best
    rag = rec.comparisons["rag"]
    assert rag.diff == pytest.approx(-1 / N) and rag.low <= 0 <= rag.high
    # vs the baseline, for the report's Δ column.
    assert set(rec.vs_baseline) == {"few-shot", "chain-of-thought", "rag", "rag-lora"}
    assert rec.vs_baseline["few-shot"].diff == pytest.approx(0.2) and rec.vs_baseline["few-shot"].other == "zero-shot"


RAG_LORA_MEAN = float(np.mean(RAG_LORA))


def test_steps_say_when_a_rung_does_not_beat_the_one_below(ladder: list[RungResult]) -> None:
    rec = recommend(ladder, primary="f1")
    assert [s.rung for s in rec.steps] == ["few-shot", "chain-of-thought", "rag", "rag-lora"]
    assert step(rec, "few-shot").startswith("Few shot beats Zero shot on f1: +0.200 [+0.")
    assert step(rec, "rag").startswith("RAG beats Zero shot on f1: +0.400 [")
    cot = step(rec, "chain-of-thought")
    assert cot.startswith("Chain-of-thought does NOT beat Zero shot on f1: −0.017 [−0.")
    assert ", +0.000], p=" in cot and "significantly" not in cot
    assert step(rec, "rag-lora").startswith("RAG + LoRA does NOT beat RAG on f1: +0.017 [")
    beats = {s.rung: s.beats for s in rec.steps}
    assert beats == {"few-shot": True, "chain-of-thought": False, "rag": True, "rag-lora": False}
    assert next(s for s in rec.steps if s.rung == "rag-lora").below == "rag"


def test_a_step_below_a_failed_rung_walks_down_the_ladder(tmp_path: Path) -> None:
    rungs = [
        make_rung(tmp_path, "zero-shot", ZERO),
        make_rung(tmp_path, "few-shot", None, status="failed", error="boom"),
        make_rung(tmp_path, "optimized-prompt", FEW, title="Optimized prompt"),
    ]
    rec = recommend(rungs, primary="f1")
    s = rec.steps[0]
    assert s.rung == "optimized-prompt" and s.below == "zero-shot" and s.beats is True
    assert "(Few shot failed, so compared with the next rung down)" in s.sentence


def test_a_step_reports_the_other_metrics_beside_the_primary(tmp_path: Path) -> None:
    # RAG ties zero-shot on f1 but finds the answer far more often: the verdict is f1's, the other metric is shown.
    rungs = [
        make_rung(tmp_path, "zero-shot", ZERO, secondary={"contains_answer": ZERO}),
        make_rung(tmp_path, "rag", ZERO, title="RAG", secondary={"contains_answer": RAG}),
    ]
    rec = recommend(rungs, primary="f1")
    s = rec.steps[0]
    assert s.beats is False and set(s.secondary) == {"contains_answer"}
    assert s.secondary["contains_answer"].diff == pytest.approx(0.4)
    assert s.sentence.startswith("RAG does NOT beat Zero shot on f1: +0.000")
    assert "Other metrics: contains_answer +0.400 [+0." in s.sentence and "(better)." in s.sentence


def test_a_significantly_worse_step_says_so(tmp_path: Path) -> None:
    rungs = [make_rung(tmp_path, "zero-shot", FEW), make_rung(tmp_path, "few-shot", ZERO)]
    rec = recommend(rungs, primary="f1")
    assert "does NOT beat" in rec.steps[0].sentence and "it scores significantly lower" in rec.steps[0].sentence
    assert rec.steps[0].beats is False


def test_failed_and_skipped_rungs_are_listed_not_picked(ladder: list[RungResult]) -> None:
    rec = recommend(ladder, primary="f1")
    ignored = {i.rung: (i.status, i.why) for i in rec.ignored}
    assert ignored == {"rag-few-shot": ("skipped", "no train split"), "lora": ("failed", "CUDA OOM: boom")}
    picks = {rec.best_quality.rung, rec.cheapest_equivalent.rung, rec.limited_compute.rung, rec.lowest_latency.rung}
    assert not picks & {"lora", "rag-few-shot"}
    assert "lora" not in rec.comparisons


def test_no_rung_comes_within_the_best(tmp_path: Path) -> None:
    rungs = [
        make_rung(tmp_path, "zero-shot", ZERO),
        make_rung(tmp_path, "rag", RAG, title="RAG", family="rag", build_s=30.0),
        make_rung(tmp_path, "rag-lora", pattern(0, 1, 2, 3, 4), title="RAG + LoRA", family="fine-tuning", build_s=600),
    ]
    rec = recommend(rungs, primary="f1")
    assert rec.best_quality.rung == rec.chosen == "rag-lora"
    assert rec.equivalent == ["rag-lora"]
    assert "no other rung comes within its CI (RAG: −0.400 [" in rec.best_quality.reason
    assert "nothing cheaper comes within its CI" in rec.cheapest_equivalent.reason
    assert rec.limited_compute.rung == "rag"
    assert "vs the best overall (RAG + LoRA): −0.400 [" in rec.limited_compute.reason
    assert "below it" in rec.limited_compute.reason


def test_a_tie_on_the_mean_goes_to_the_cheaper_rung(tmp_path: Path) -> None:
    rungs = [
        make_rung(tmp_path, "zero-shot", ZERO),
        make_rung(tmp_path, "lora", RAG, title="LoRA", family="fine-tuning", build_s=300.0, latency=0.5),
        make_rung(tmp_path, "rag", RAG, title="RAG", family="rag", build_s=20.0, latency=0.9),
    ]
    rec = recommend(rungs, primary="f1")
    assert rec.best_quality.rung == "rag"
    assert "ties on the mean with LoRA" in rec.best_quality.reason
    assert rec.equivalent == ["lora", "rag"]
    assert rec.comparisons["lora"].p_value == 1.0  # identical per-example scores
    assert rec.chosen == "rag"
    assert rec.lowest_latency.rung == "lora"  # faster, and indistinguishable from the best


def test_equal_build_times_are_broken_by_latency(tmp_path: Path) -> None:
    # Zero-shot and chain-of-thought both build nothing; their build seconds differ by timer noise only.
    rungs = [
        make_rung(tmp_path, "zero-shot", RAG, build_s=0.4, latency=0.9),
        make_rung(tmp_path, "chain-of-thought", RAG, title="CoT", build_s=0.4 + BUILD_TIE_S / 2, latency=0.3),
        make_rung(tmp_path, "rag", RAG, title="RAG", family="rag", build_s=5.0, latency=0.1),
    ]
    rec = recommend(rungs, primary="f1")
    assert rec.chosen == "chain-of-thought"
    assert "p50 latency broke the tie" in rec.cheapest_equivalent.reason
    assert rec.lowest_latency.rung == "rag"


def test_unknown_cost_sorts_last(tmp_path: Path) -> None:
    rungs = [
        make_rung(tmp_path, "few-shot", RAG, build_s=None, latency=0.1),
        make_rung(tmp_path, "zero-shot", RAG, build_s=50.0, latency=0.5),
    ]
    assert recommend(rungs, primary="f1").chosen == "zero-shot"


def test_time_budget_limits_compute_by_build_seconds(ladder: list[RungResult], tmp_path: Path) -> None:
    quick_lora = make_rung(tmp_path / "more", "lora", RAG_LORA, title="LoRA", family="fine-tuning", build_s=50.0)
    rungs = [r for r in ladder if r.name != "lora"] + [quick_lora]
    rec = recommend(rungs, primary="f1", budgets=BudgetSpec(time_minutes=1))
    # The budget replaces "no training": LoRA builds in 50 s and fits; RAG + LoRA (600 s) does not.
    assert rec.limited_compute.rung == "lora"
    assert "Of the rungs that build within the 1-minute budget (60 s), LoRA scores best" in rec.limited_compute.reason
    assert recommend(rungs, primary="f1").limited_compute.rung == "rag"


def test_limited_compute_without_a_rung_that_qualifies(tmp_path: Path) -> None:
    rungs = [make_rung(tmp_path, "lora", RAG, title="LoRA", family="fine-tuning", build_s=120.0)]
    rec = recommend(rungs, primary="f1")
    assert rec.chosen == "lora" and "it is the only complete rung" in rec.best_quality.reason
    assert rec.limited_compute.rung is None
    assert rec.limited_compute.reason == "There are no complete rungs that need no training (prompting or RAG)."
    budget = recommend(rungs, primary="f1", budgets=BudgetSpec(time_minutes=1))
    assert budget.limited_compute.rung is None and "build within the 1-minute budget" in budget.limited_compute.reason


def test_latency_budget_picks_the_best_rung_that_meets_it(ladder: list[RungResult]) -> None:
    rec = recommend(ladder, primary="f1", budgets=BudgetSpec(latency_p50_s=0.5))
    assert rec.lowest_latency.rung == "few-shot"  # 0.40 s, better than zero-shot (0.30 s)
    assert "Of the rungs that answer within the p50 budget of 0.50 s, Few shot" in rec.lowest_latency.reason
    assert rec.chosen == "rag"  # the budget shapes its own pick, not the chosen one
    none = recommend(ladder, primary="f1", budgets=BudgetSpec(latency_p50_s=0.1))
    assert none.lowest_latency.rung is None
    assert "No rung meets the p50 latency budget of 0.10 s; the fastest is Zero shot at 0.30 s" in (
        none.lowest_latency.reason
    )


def test_memory_budget_is_noted(ladder: list[RungResult]) -> None:
    rec = recommend(ladder, primary="f1", budgets=BudgetSpec(memory_gb=0.5))
    assert any("over the 0.5 GB memory budget" in n for n in rec.notes)


def test_not_promotable_rung_is_not_chosen(tmp_path: Path) -> None:
    drop = {"before": 0.4, "after": 0.3, "drop": 0.1, "max_drop": 0.02, "promotable": False}
    rungs = [
        make_rung(tmp_path, "zero-shot", ZERO),
        make_rung(tmp_path, "rag", RAG, title="RAG", family="rag", build_s=30.0),
        make_rung(tmp_path, "lora", pattern(0, 1, 2, 3, 4), title="LoRA", family="fine-tuning", canaries=drop),
    ]
    rec = recommend(rungs, primary="f1")
    assert rec.best_quality.rung == "lora"  # a fact about the ladder
    assert rec.chosen == "rag"  # but the canaries block shipping it
    assert "LoRA is NOT PROMOTABLE (canary drop 0.100)" in rec.cheapest_equivalent.reason
    assert any("not recommended for shipping" in n for n in rec.notes)


def test_a_rung_without_predictions_cannot_be_called_equivalent(tmp_path: Path) -> None:
    rungs = [
        make_rung(tmp_path, "zero-shot", RAG, predictions=False),
        make_rung(tmp_path, "rag-lora", RAG_LORA, title="RAG + LoRA", build_s=600.0),
    ]
    rec = recommend(rungs, primary="f1")
    assert rec.equivalent == ["rag-lora"] and rec.chosen == "rag-lora"
    assert "zero-shot" not in rec.comparisons
    assert any("cannot be paired" in n and "predictions.jsonl is missing" in n for n in rec.notes)
    assert "cannot be paired" in rec.steps[0].sentence and rec.steps[0].beats is None


def test_lower_is_better_metric(tmp_path: Path) -> None:
    rungs = [
        make_rung(tmp_path, "zero-shot", [2.0 + (i % 3) for i in range(N)], metric="perplexity",
                  higher_is_better=False),
        make_rung(tmp_path, "lora", [1.0 + (i % 3) for i in range(N)], title="LoRA", metric="perplexity",
                  higher_is_better=False, build_s=100.0),
    ]  # fmt: skip
    rec = recommend(rungs, primary="perplexity")
    assert not rec.higher_is_better
    assert rec.best_quality.rung == rec.chosen == "lora"
    assert rec.steps[0].beats is True and rec.steps[0].sentence.startswith(
        "LoRA beats Zero shot on perplexity: −1.000"
    )


def test_zero_complete_rungs(tmp_path: Path) -> None:
    rungs = [
        make_rung(tmp_path, "zero-shot", None, status="failed", error="model not found"),
        make_rung(tmp_path, "rag", None, title="RAG", status="skipped", reason="no documents"),
    ]
    rec = recommend(rungs, primary="f1")
    assert rec.chosen is None and rec.system is None and rec.best_quality.rung is None
    assert rec.reason == "No rung completed with a f1 score (1 failed, 1 skipped): nothing to recommend."
    assert [i.rung for i in rec.ignored] == ["zero-shot", "rag"]
    empty = recommend([], primary="f1")
    assert empty.chosen is None and "no rungs" in empty.reason


def test_a_custom_below_mapping_and_unknown_rungs(ladder: list[RungResult], tmp_path: Path) -> None:
    extra = make_rung(tmp_path / "x", "my-rung", FEW, title="My rung")
    rec = recommend([*ladder, extra], primary="f1", below={"rag-lora": "few-shot"})
    # Named in the mapping: vs few-shot; not named: vs the baseline.
    assert next(s for s in rec.steps if s.rung == "rag-lora").below == "few-shot"
    assert next(s for s in rec.steps if s.rung == "rag").below == "zero-shot"
    assert next(s for s in rec.steps if s.rung == "my-rung").below == "zero-shot"


def test_same_seed_same_intervals(ladder: list[RungResult]) -> None:
    a = recommend(ladder, primary="f1", seed=3)
    b = recommend(ladder, primary="f1", seed=3)
    assert a.model_dump() == b.model_dump()
    assert json.loads(a.model_dump_json())["chosen"] == "rag"  # round-trips as JSON (ladder.json)


def test_formatting() -> None:
    assert fmt_signed(-0.0123) == "−0.012" and fmt_signed(0.2) == "+0.200"
    assert fmt_p(0.0004) == "p<0.001" and fmt_p(0.0021) == "p=0.002" and fmt_p(0.712) == "p=0.71"
