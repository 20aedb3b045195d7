"""The ladder report: the harness report over fake rungs' eval runs, the ladder's sections and the Pareto chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tailorlm.eval.report import ReportFiles
from tailorlm.ladder.recommend import Recommendation, recommend
from tailorlm.ladder.report import build_ladder_report, pareto_frontier, rung_table, write_ladder_report
from tailorlm.ladder.result import Estimate, RungResult
from unit.ladder.test_recommend import FEW, ZERO, make_rung, typical_ladder  # tests/ is on sys.path

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def written(tmp_path: Path) -> tuple[list[RungResult], Recommendation, ReportFiles]:
    results = typical_ladder(tmp_path / "runs")
    # Plan vs actual: zero-shot as planned, RAG + LoRA took 3x its estimate.
    results[0] = results[0].model_copy(
        update={"estimate": Estimate(build_s=0.0, eval_s=10.0, basis="fake"), "actual_s": 11.0}
    )
    results[-1] = results[-1].model_copy(
        update={"estimate": Estimate(build_s=200.0, eval_s=20.0, basis="fake"), "actual_s": 660.0}
    )
    rec = recommend(results, primary="f1")
    files = write_ladder_report(results, rec, tmp_path / "report", task_name="xquad-qa", primary="f1")
    return results, rec, files


def test_files_exist_and_pareto_is_a_png(written: tuple[list[RungResult], Recommendation, ReportFiles]) -> None:
    _, _, files = written
    assert files.html.is_file() and files.markdown.is_file() and (files.dir / "report.json").is_file()
    names = [c.name for c in files.charts]
    assert "pareto.png" in names and "metrics.png" in names and "cost.png" in names
    assert (files.dir / "pareto.png").read_bytes().startswith(PNG_MAGIC)


def test_summary_has_the_rung_table_and_the_chart(
    written: tuple[list[RungResult], Recommendation, ReportFiles],
) -> None:
    _, _, files = written
    md = files.markdown.read_text(encoding="utf-8")
    assert md.startswith("# Ladder: xquad-qa\n")
    assert "## Rungs" in md
    assert "| rung | status | f1 [95% CI] | Δ vs Zero shot [95% CI] | build (s) | tokens | peak MB |" in md
    assert "| RAG ★ chosen | complete | 0.600 [" in md
    assert "| LoRA | FAILED: CUDA OOM: boom | — |" in md
    assert "| RAG + few-shot | skipped: no train split |" in md
    assert "](pareto.png)" in md and "![Quality vs cost" in md
    # The harness's own tables, labelled by rung title, baseline first.
    assert "### Difference vs baseline (Zero shot)" in md and "| RAG + LoRA − Zero shot |" in md
    assert "## Examples where the runs differ most on f1" in md


def test_failures_and_steps_are_not_hidden(written: tuple[list[RungResult], Recommendation, ReportFiles]) -> None:
    _, _, files = written
    md = files.markdown.read_text(encoding="utf-8")
    assert "> **⚠ rung LoRA FAILED: CUDA OOM: boom**" in md
    assert "## Failed and skipped rungs" in md and "| LoRA | FAILED | CUDA OOM: boom |" in md
    assert "## Does each step pay?" in md
    assert "RAG + LoRA does NOT beat RAG on f1: +0.017 [" in md
    assert "| Chain-of-thought | Zero shot | does NOT pay | Chain-of-thought does NOT beat Zero shot" in md
    assert "| RAG | Zero shot | pays | RAG beats Zero shot on f1: +0.400 [" in md


def test_recommendation_and_plan_sections(written: tuple[list[RungResult], Recommendation, ReportFiles]) -> None:
    _, _, files = written
    md = files.markdown.read_text(encoding="utf-8")
    assert "## Recommendation" in md
    assert "| chosen: cheapest equivalent (best/system.yaml) | RAG | RAG is the cheapest rung" in md
    assert "| limited compute | RAG |" in md and "| best quality | RAG + LoRA |" in md
    assert "## Plan vs actual" in md
    assert "| Zero shot | 10.0 | 11.0 | 1.10 | fake |" in md
    assert "| RAG + LoRA | 220.0 | 660.0 | 3.00 ⚠ outside [0.5, 2] | fake |" in md
    assert "| total (rungs with both) | 230.0 | 671.0 | 2.92 |" in md


def test_html_embeds_the_chart_and_sections(written: tuple[list[RungResult], Recommendation, ReportFiles]) -> None:
    _, _, files = written
    page = files.html.read_text(encoding="utf-8")
    assert "<title>Ladder: xquad-qa</title>" in page
    assert 'alt="Quality vs cost (f1)' in page and page.count("data:image/png;base64,") >= 3
    assert "does NOT beat" in page and "FAILED: CUDA OOM: boom" in page and "Plan vs actual" in page
    report = json.loads((files.dir / "report.json").read_text(encoding="utf-8"))
    assert [r["label"] for r in report["runs"]] == ["Zero shot", "Few shot", "Chain-of-thought", "RAG", "RAG + LoRA"]
    assert report["primary_metric"] == "f1"


def test_baseline_goes_first_whatever_the_ladder_order(tmp_path: Path) -> None:
    results = typical_ladder(tmp_path / "runs")
    results = [results[3], results[0], results[1]]  # RAG, zero-shot, few-shot
    rec = recommend(results, primary="f1")
    report = build_ladder_report(results, rec, task_name="t", primary="f1", title="Custom")
    assert report.title == "Custom"
    assert [r.label for r in report.runs] == ["Zero shot", "RAG", "Few shot"]
    rungs = next(s for s in report.sections if s.title == "Rungs")
    assert [row[0] for row in rungs.rows] == ["RAG ★ chosen", "Zero shot", "Few shot"]  # ladder order
    assert rungs.rows[1][3] == "baseline" and rungs.rows[0][3].startswith("+0.400 [")


def test_no_complete_rung_still_writes_a_report(tmp_path: Path) -> None:
    results = [
        make_rung(tmp_path, "zero-shot", None, status="failed", error="model <b>not</b> found"),
        make_rung(tmp_path, "rag", None, title="RAG", status="skipped", reason="no documents"),
    ]
    rec = recommend(results, primary="f1")
    files = write_ladder_report(results, rec, tmp_path / "report", task_name="empty", primary="f1")
    md = files.markdown.read_text(encoding="utf-8")
    assert "no recommendation: No rung completed" in md
    assert "FAILED: model &lt;b&gt;not&lt;/b&gt; found" in md  # escaped: errors may hold markup
    assert "pareto.png" not in md and files.charts == []
    assert "model &lt;b&gt;not&lt;/b&gt; found" in files.html.read_text(encoding="utf-8")


def test_a_single_rung_has_a_chart(tmp_path: Path) -> None:
    results = [make_rung(tmp_path, "zero-shot", ZERO, build_s=0.0, latency=0.3)]
    rec = recommend(results, primary="f1")
    files = write_ladder_report(results, rec, tmp_path / "report", task_name="one", primary="f1")
    assert (files.dir / "pareto.png").read_bytes().startswith(PNG_MAGIC)


def test_rung_table_for_the_terminal(tmp_path: Path) -> None:
    results = typical_ladder(tmp_path / "runs")
    rec = recommend(results, primary="f1")
    table = rung_table(results, primary="f1", recommendation=rec)
    assert table.row_count == len(results)
    console = Console(record=True, width=220, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "FAILED: CUDA OOM: boom" in text and "skipped: no train split" in text and "RAG ★ chosen" in text
    assert rung_table(results).row_count == len(results)  # usable live, before there is a recommendation


def test_a_step_that_pays_on_another_metric_says_which(tmp_path: Path) -> None:
    results = [
        make_rung(tmp_path, "zero-shot", ZERO, secondary={"contains_answer": ZERO}),
        make_rung(tmp_path, "rag", ZERO, title="RAG", secondary={"contains_answer": FEW}),
    ]
    rec = recommend(results, primary="f1")
    files = write_ladder_report(results, rec, tmp_path / "report", task_name="qa", primary="f1")
    assert "does NOT pay on f1; pays on contains_answer" in files.markdown.read_text(encoding="utf-8")


def test_pareto_frontier() -> None:
    pts = [(0.0, 0.2), (0.2, 0.4), (0.0, 0.18), (30.0, 0.6), (600.0, 0.62), (5.0, 0.3), (900.0, 0.5)]
    assert pareto_frontier(pts) == [(0.0, 0.2), (0.2, 0.4), (30.0, 0.6), (600.0, 0.62)]
    assert pareto_frontier([(1.0, 3.0), (2.0, 2.0), (3.0, 2.5)], higher_is_better=False) == [(1.0, 3.0), (2.0, 2.0)]
