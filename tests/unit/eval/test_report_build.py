"""Building the report model from eval run directories written in tmp_path (docs/eval-runs.md format)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tailorlm.core.io import atomic_write_json, atomic_write_text
from tailorlm.core.run import Run
from tailorlm.errors import RunError, TailorError
from tailorlm.eval.report.build import (
    Estimate,
    PairedDiff,
    _paired_diff,
    build_report,
    fmt_diff,
    fmt_estimate,
)
from tailorlm.eval.report.html import render_html
from tailorlm.eval.report.markdown import render_markdown

pytestmark = pytest.mark.unit

CATEGORIES = ["history"] * 8 + ["science"] * 7 + ["sports"] * 5
SCRIPT = "<script>alert('x')</script>"
LONG_INPUT = "Read the passage and answer. " + "lorem ipsum " * 60


def example_records(tuned: bool) -> list[dict[str, Any]]:
    """20 examples; the tuned system gains 0.3 F1 on even ids, and loses everything on q3 (a regression)."""
    records = []
    for i, cat in enumerate(CATEGORIES):
        f1 = 0.2 + 0.05 * (i % 5)
        if tuned:
            f1 = 0.0 if i == 3 else min(1.0, f1 + (0.3 if i % 2 == 0 else 0.0))
        records.append(
            {
                "id": f"q{i}",
                "input": LONG_INPUT if i == 3 else f"Question {i}?",
                "reference": [f"answer {i}"],
                "prediction": SCRIPT if (tuned and i == 3) else f"pred {i}",
                "scores": {"f1": f1, "exact_match": 1.0 if f1 >= 0.5 else 0.0},
                "category": cat,
                "latency_s": 0.5,
                "prompt_tokens": 100,
                "completion_tokens": 5,
            }
        )
    return records


def _summary(records: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    x = np.array([r["scores"][metric] for r in records])
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    return {"value": float(x.mean()), "low": float(x.mean() - half), "high": float(x.mean() + half)}


def make_eval_run(
    root: Path,
    system: str,
    records: list[dict[str, Any]],
    *,
    task: str = "qa-demo",
    canaries: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    fail: bool = False,
) -> str:
    """An eval run directory as `tailor eval` writes it; returns its id. ``fail`` leaves it "failed"."""
    run = Run.create(f"eval-{system}", root=root, kind="eval", seed=0)
    atomic_write_text(run.path / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    by_cat: dict[str, dict[str, float]] = {}
    for cat in dict.fromkeys(r["category"] for r in records):
        sub = [r for r in records if r["category"] == cat]
        by_cat[cat] = {
            "n": len(sub),
            **{m: float(np.mean([r["scores"][m] for r in sub])) for m in ("f1", "exact_match")},
        }
    metrics: dict[str, Any] = {
        "task": task,
        "system": system,
        "n": len(records),
        "seed": 0,
        "metrics": {"f1": _summary(records, "f1"), "exact_match": _summary(records, "exact_match")},
        "cost": {"wall_s": 12.5, "prompt_tokens": 2000, "completion_tokens": 100, "tokens_per_s": 8.0,
                 "latency_p50_s": 0.5, "peak_rss_mb": 1900 if system == "base" else 2100},
        "by_category": by_cat,
        **({"canaries": canaries} if canaries else {}),
        **(extra or {}),
    }  # fmt: skip
    atomic_write_json(run.path / "metrics.json", metrics)
    run.finish("failed", "RuntimeError: boom") if fail else run.finish("complete")
    return run.id


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, str, str]:
    root = tmp_path / "runs"
    base = make_eval_run(root, "base", example_records(tuned=False))
    tuned = make_eval_run(
        root,
        "tuned",
        example_records(tuned=True),
        canaries={"before": 0.41, "after": 0.30, "drop": 0.11, "max_drop": 0.05, "promotable": False},
    )
    return root, base, tuned


def test_report_from_two_runs(two_runs: tuple[Path, str, str]) -> None:
    root, base, tuned = two_runs
    report = build_report([base, tuned], root)
    assert [r.id for r in report.runs] == [base, tuned]
    assert [r.label for r in report.runs] == ["base", "tuned"]
    assert report.runs[0].versions["python"]  # versions come from run.json
    assert report.primary_metric == "f1"
    assert [m.name for m in report.metrics] == ["f1", "exact_match"]
    assert report.metrics[0].values[0] is not None and report.metrics[0].values[0].low is not None
    assert [t.metric for t in report.categories] == ["f1", "exact_match"]
    assert [row.category for row in report.categories[0].rows] == ["history", "science", "sports"]  # by count
    assert [c.run for c in report.cost] == ["base", "tuned"]
    assert report.canaries[0].promotable is False
    assert any("NOT PROMOTABLE" in w for w in report.warnings)
    # The model round-trips through JSON (what --json prints and report.json holds).
    assert json.loads(report.model_dump_json())["runs"][1]["id"] == tuned


def test_ci_formatting() -> None:
    assert fmt_estimate(Estimate(value=0.1724, low=0.1213, high=0.2238)) == "0.172 [0.121, 0.224]"
    assert fmt_estimate(Estimate(value=0.5)) == "0.500"
    assert fmt_estimate(None) == "—"
    assert fmt_diff(PairedDiff(diff=0.052, low=0.01, high=0.094)) == "+0.052 [+0.010, +0.094]"
    assert fmt_diff(PairedDiff(diff=-0.05, low=-0.1, high=0.0)) == "-0.050 [-0.100, +0.000]"


def test_best_run_is_marked(two_runs: tuple[Path, str, str]) -> None:
    root, base, tuned = two_runs
    report = build_report([base, tuned], root)
    f1 = report.metrics[0]
    assert f1.values[1].value > f1.values[0].value  # type: ignore[union-attr]
    assert f1.best == [1]
    single = build_report([base], root)
    assert single.metrics[0].best == []  # one run: nothing to compare, nothing marked


def test_lower_is_better_marks_the_minimum(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    recs = example_records(tuned=False)
    a = make_eval_run(root, "a", recs, extra={"metrics": {"perplexity": {"value": 9.0, "higher_is_better": False}}})
    b = make_eval_run(root, "b", recs, extra={"metrics": {"perplexity": {"value": 7.5, "higher_is_better": False}}})
    report = build_report([a, b], root)
    assert report.metrics[0].name == "perplexity" and report.metrics[0].best == [1]


def test_paired_difference_sign_and_determinism(two_runs: tuple[Path, str, str]) -> None:
    root, base, tuned = two_runs
    r1 = build_report([base, tuned], root, seed=3)
    r2 = build_report([base, tuned], root, seed=3)
    d = r1.metrics[0].diffs[1]
    assert r1.metrics[0].diffs[0] is None
    assert d is not None and d.source == "bootstrap" and d.n == 20
    tuned_mean = np.mean([r["scores"]["f1"] for r in example_records(True)])
    base_mean = np.mean([r["scores"]["f1"] for r in example_records(False)])
    assert d.diff == pytest.approx(tuned_mean - base_mean)  # run minus baseline
    assert d.diff > 0 and d.low <= d.diff <= d.high
    assert d == r2.metrics[0].diffs[1]  # same seed, same interval
    # Swapping the baseline flips the sign.
    swapped = build_report([tuned, base], root, seed=3).metrics[0].diffs[1]
    assert swapped is not None and swapped.diff == pytest.approx(-d.diff)


def test_paired_diff_function() -> None:
    a = np.array([1.0, 1.0, 1.0, 1.0])
    b = np.array([0.0, 0.0, 0.0, 0.0])
    d = _paired_diff(a, b, seed=0)
    assert (d.diff, d.low, d.high, d.n) == (1.0, 1.0, 1.0, 4)  # constant difference: a zero-width interval
    rng = np.random.default_rng(0)
    x, y = rng.random(500), rng.random(500)
    assert _paired_diff(x, y, seed=1) == _paired_diff(x, y, seed=1)
    assert _paired_diff(x, y, seed=1).p_value > 0.05  # type: ignore[operator]  # no real difference


def test_paired_stats_from_metrics_json_win(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    base = make_eval_run(root, "base", example_records(False))
    given = {base: {"f1": {"diff": 0.5, "low": 0.4, "high": 0.6, "p_value": 0.001, "n": 20}}}
    tuned = make_eval_run(root, "tuned", example_records(True), extra={"paired": given})
    d = build_report([base, tuned], root).metrics[0].diffs[1]
    assert d is not None and d.source == "metrics.json" and d.diff == 0.5


def test_worst_examples_single_run(two_runs: tuple[Path, str, str]) -> None:
    root, _, tuned = two_runs
    ex = build_report([tuned], root, n_examples=3).examples
    assert ex is not None and ex.mode == "lowest" and ex.metric == "f1"
    assert [r.id for r in ex.rows] == ["q3", "q5", "q15"]  # 0.0, then the ties at 0.2 in eval-set order
    assert [r.scores[0] for r in ex.rows] == sorted(r.scores[0] for r in ex.rows)  # type: ignore[type-var]


def test_most_different_examples_two_runs(two_runs: tuple[Path, str, str]) -> None:
    root, base, tuned = two_runs
    ex = build_report([base, tuned], root, n_examples=4).examples
    assert ex is not None and ex.mode == "disagreement"
    assert ex.rows[0].id == "q3"  # the regression: 0.35 → 0.0, the largest spread
    assert ex.rows[0].predictions == ["pred 3", SCRIPT]
    # Then the 0.3 gains, ties in eval-set order (float noise in the spreads must not reorder them).
    assert [r.id for r in ex.rows] == ["q3", "q0", "q2", "q4"]
    assert [round(r.spread or 0.0, 9) for r in ex.rows] == [0.35, 0.3, 0.3, 0.3]


def test_script_in_predictions_is_escaped(two_runs: tuple[Path, str, str]) -> None:
    root, base, tuned = two_runs
    report = build_report([base, tuned], root)
    page = render_html(report)
    assert SCRIPT not in page and "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "<details>" in page and "…" in page  # the long input is cut, the full text folded away
    md = render_markdown(report)
    assert SCRIPT not in md and "&lt;script&gt;" in md


def test_incomplete_run_is_flagged(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = make_eval_run(root, "half", example_records(False), fail=True)
    report = build_report([run], root)
    assert report.runs[0].status == "failed" and not report.runs[0].complete
    assert any("FAILED" in w for w in report.warnings)


def test_errors_name_the_file_and_line(two_runs: tuple[Path, str, str], tmp_path: Path) -> None:
    root, base, tuned = two_runs
    with pytest.raises(RunError):
        build_report(["nope"], root)
    preds = root / tuned / "predictions.jsonl"
    lines = preds.read_text().splitlines()
    lines[4] = '{"id": "q4", "scores": {"f1": 0.3'  # torn line
    preds.write_text("\n".join(lines) + "\n")
    with pytest.raises(TailorError, match=r"predictions\.jsonl:5: invalid JSON"):
        build_report([base, tuned], root)
    lines[4] = json.dumps({"id": "q4", "scores": {"f1": "high"}})
    preds.write_text("\n".join(lines) + "\n")
    with pytest.raises(TailorError, match=r"predictions\.jsonl:5: scores\.f1"):
        build_report([tuned], root)
    (root / base / "metrics.json").unlink()
    with pytest.raises(TailorError, match=r"metrics\.json"):
        build_report([base], root)
