"""Evaluation reports: eval runs → ``report.html`` (self-contained), ``summary.md`` and PNG charts.

    report = build_report(["runs/…-eval-base", "runs/…-eval-sft"])   # read runs into a Report model
    files = write_report(report, "reports/base-vs-sft")              # charts + HTML + markdown, atomically

``create_report`` does both with the CLI's default output folder; it is what ``tailor report`` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tailorlm.core.io import atomic_directory, atomic_write_bytes, atomic_write_text
from tailorlm.eval.report.build import (
    CategoryTable,
    Estimate,
    ExampleSection,
    MetricRow,
    PairedDiff,
    Report,
    RunSummary,
    Table,
    build_report,
    fmt_diff,
    fmt_estimate,
)
from tailorlm.eval.report.charts import Chart, ChartFn, render_charts
from tailorlm.eval.report.html import render_html
from tailorlm.eval.report.markdown import render_markdown

__all__ = [
    "CategoryTable",
    "Chart",
    "ChartFn",
    "Estimate",
    "ExampleSection",
    "MetricRow",
    "PairedDiff",
    "Report",
    "ReportFiles",
    "RunSummary",
    "Table",
    "build_report",
    "create_report",
    "default_out_dir",
    "fmt_diff",
    "fmt_estimate",
    "render_charts",
    "render_html",
    "render_markdown",
    "write_report",
]


@dataclass(frozen=True)
class ReportFiles:
    """Where a written report lies."""

    dir: Path
    html: Path
    markdown: Path
    charts: list[Path]

    def to_dict(self) -> dict[str, object]:
        return {"dir": str(self.dir), "html": str(self.html), "markdown": str(self.markdown),
                "charts": [str(c) for c in self.charts]}  # fmt: skip


def default_out_dir(report: Report) -> Path:
    """``<run dir>/report/`` for one run (the report travels with the run); ``reports/<timestamp>/`` otherwise."""
    if len(report.runs) == 1:
        return Path(report.runs[0].path) / "report"
    return Path("reports") / datetime.now().strftime("%Y%m%d-%H%M%S")


def write_report(report: Report, out: str | Path, *, extra_charts: Sequence[ChartFn] = ()) -> ReportFiles:
    """Render charts, ``report.html``, ``summary.md`` and ``report.json`` into ``out``, replacing it atomically.

    Everything is rendered in memory first and written into a temporary sibling folder that is renamed into place
    at the end, so a killed or failed report leaves either the previous report or none, never half of one.
    """
    out = Path(out)
    charts = render_charts(report, extra_charts)
    page = render_html(report, charts)
    summary = render_markdown(report, charts)
    with atomic_directory(out) as tmp:
        for chart in charts:
            atomic_write_bytes(tmp / chart.name, chart.png)
        atomic_write_text(tmp / "report.html", page)
        atomic_write_text(tmp / "summary.md", summary)
        # The model itself, for scripts and for the ladder to re-render without re-reading the runs.
        atomic_write_text(tmp / "report.json", report.model_dump_json(indent=2) + "\n")
    return ReportFiles(
        dir=out, html=out / "report.html", markdown=out / "summary.md", charts=[out / c.name for c in charts]
    )


def create_report(
    refs: Sequence[str | Path],
    root: str | Path = "runs",
    *,
    out: str | Path | None = None,
    title: str | None = None,
    n_examples: int = 10,
    seed: int = 0,
) -> tuple[Report, ReportFiles]:
    """Build the report of ``refs`` and write it to ``out`` (default: ``default_out_dir``). ``tailor report``."""
    report = build_report(refs, root, title=title, n_examples=n_examples, seed=seed)
    return report, write_report(report, out if out is not None else default_out_dir(report))
