"""`tailor report RUN [RUN...]`: an HTML + markdown report of eval runs. Calls ``eval.report.create_report``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

from tailorlm.cli._common import console, print_json
from tailorlm.core.safe_text import safe_cell
from tailorlm.eval.report import create_report
from tailorlm.eval.report.build import Report, fmt_diff, fmt_estimate


def _headline(report: Report) -> Table:
    """Metrics × runs; under each non-baseline value, its paired difference vs the baseline (Δ)."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", title="headline metrics (value [95% CI])", pad_edge=False)
    table.add_column("metric", no_wrap=True)
    for i, run in enumerate(report.runs):
        status = "" if run.complete else f" [bold red]({run.status.upper()})[/]"
        table.add_column(f"{safe_cell(run.label)}{' (baseline)' if i == 0 and len(report.runs) > 1 else ''}{status}")
    for m in report.metrics:
        cells = []
        for i, v in enumerate(m.values):
            cell = f"[bold green]{fmt_estimate(v)}[/]" if i in m.best else fmt_estimate(v)
            # A second line keeps the columns narrow enough for an 80-column terminal with two or three runs.
            if i > 0 and m.diffs and m.diffs[i] is not None:
                cell += f"\n[dim]Δ {fmt_diff(m.diffs[i])}[/]"
            cells.append(cell)
        table.add_row(safe_cell(m.name), *cells)
    return table


def report(
    runs: list[str] = typer.Argument(
        ..., help="Eval runs: ids, id prefixes, names, paths or 'latest'. First = baseline."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder. Default: <run>/report/ for one run, reports/<timestamp>/ for several.",
    ),
    root: Path = typer.Option(Path("runs"), "--root", help="Folder that holds the run directories."),
    title: str | None = typer.Option(None, "--title", help="Report title (default: the systems compared)."),
    examples: int = typer.Option(
        10, "--examples", "-n", min=0, help="How many worst/most-different examples to show."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report model as JSON instead of a table."),
) -> None:
    """Write report.html (self-contained), summary.md and PNG charts comparing eval runs."""
    rep, files = create_report(runs, root, out=out, title=title, n_examples=examples)
    if as_json:
        print_json({**rep.model_dump(mode="json"), "files": files.to_dict()})
        return
    for warning in rep.warnings:
        console.print(f"[bold red]⚠ {safe_cell(warning)}[/]", highlight=False, soft_wrap=True, markup=True)
    console.print(_headline(rep))
    console.print(f"report:  {files.html}", highlight=False, soft_wrap=True)
    console.print(f"summary: {files.markdown}", highlight=False, soft_wrap=True)
    console.print(f"charts:  {', '.join(c.name for c in files.charts) or 'none'}", highlight=False, soft_wrap=True)
