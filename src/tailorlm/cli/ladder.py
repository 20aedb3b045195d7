"""`tailor ladder TASK.yaml`: run the rungs on a task, report quality against cost, recommend one."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import console, err_console, print_json
from tailorlm.core.task import Task

LOG_WIDTH = 140  # columns for the rung table when the output is not a terminal (a log, CI)


@contextlib.contextmanager
def _training_display() -> Iterator[list[Any]]:
    from tailorlm.cli._training import progress_callback, training_progress

    progress = training_progress()
    with progress:
        yield [progress_callback(progress)]


def ladder(
    task: Path = typer.Argument(..., help="The task.yaml (see `tailor init`)."),
    overrides: list[str] = typer.Argument(None, help="Dotted task overrides, e.g. ladder.eval_limit=40."),
    rungs: str = typer.Option(None, "--rungs", "-r", help="Comma-separated rungs to run (default: all that apply)."),
    budget_minutes: float = typer.Option(
        None, "--budget-minutes", help="Skip rungs whose estimate no longer fits in this many minutes."
    ),
    plan: bool = typer.Option(False, "--plan", help="Only estimate each rung's time and memory, then stop."),
    quick: bool = typer.Option(False, "--quick", help="A smoke run on a sliver of the data (a few minutes)."),
    model: str = typer.Option("default", "--model", "-m", help="Base model of every rung."),
    out: Path = typer.Option(None, "--out", "-o", help="Ladder folder (default: runs/ladder-<task>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rung results as JSON."),
) -> None:
    """Run every applicable rung (zero-shot, few-shot, CoT, optimized prompt, RAG, RAG + few-shot, LoRA, RAFT) on the
    same eval set; report quality with CIs against build and serving cost; write best/system.yaml.

    Unchanged rungs are reused and a killed ladder resumes where it stopped.
    """
    from tailorlm.ladder.plan import plan_table
    from tailorlm.ladder.runner import Ladder

    _quiet_libraries()
    task_ = Task.load(task, overrides or [])
    names = [r.strip() for r in rungs.split(",") if r.strip()] if rungs else None
    runner = Ladder(
        task_, model=model, out=out, rungs=names, quick=quick, budget_minutes=budget_minutes,
        console=err_console, training_display=None if as_json else _training_display, progress=not as_json,
    )  # fmt: skip
    for rung, why in runner.rungs:
        if why:
            err_console.print(f"[dim]{rung.title}: skipped, {escape(why)}[/]")
    outcome = runner.run(plan_only=plan)
    if plan:
        if as_json:
            print_json({n: {**e.model_dump(), "total_s": e.total_s} for n, e in outcome.plan.items()})
        else:
            console.print(plan_table(runner.runnable(), outcome.plan))
            console.print(f"run it: [bold]tailor ladder {escape(str(task))}{' --quick' if quick else ''}[/]")
        return
    if as_json:
        print_json({"dir": str(outcome.dir), "rungs": [r.model_dump(mode="json") for r in outcome.results],
                    "recommendation": outcome.recommendation.model_dump(mode="json"),
                    "report": outcome.report.to_dict(), "wall_s": outcome.wall_s})  # fmt: skip
        return
    _print_wide(_table(outcome.results, task_.primary))
    rec = outcome.recommendation
    for step in rec.steps:
        mark = "[green]pays[/]" if step.beats else "[yellow]does not pay[/]" if step.beats is False else "–"
        console.print(f"{mark}: {escape(step.sentence)}")
    for line in _recommendation_lines(rec):
        console.print(line)
    console.print(f"report: {escape(str(outcome.report.html))}")
    if (outcome.dir / "best" / "system.yaml").is_file():
        best = outcome.dir / "best"
        console.print(f"best System: {escape(str(best))} → [bold]tailor chat --system {escape(str(best))}[/]")
    m, s = divmod(int(outcome.wall_s), 60)
    console.print(f"ladder took {m}:{s:02d}")


def _print_wide(table: Table) -> None:
    """A log or CI console is 80 columns unless told otherwise, which folds every cell of the rung table in two."""
    if console.is_terminal:
        console.print(table)
        return
    # Console.print(width=) cannot go past the console's own width: a console of the log's width prints it.
    wide = Console(file=console.file, width=max(console.width, LOG_WIDTH), color_system=None, highlight=False)
    wide.print(table)


def _table(results: list[Any], metric: str) -> Table:
    """The rung table, narrow enough for a terminal; the report has every column."""
    table = Table(title="ladder")
    for col in ("rung", metric, "Δ vs zero-shot", "build", "p50", "prompt tok", "canary Δ", "est / actual"):
        table.add_column(col, justify="left" if col == "rung" else "right")
    for r in results:
        if not r.ok:
            why = r.error if r.status == "failed" else r.reason
            # Cut at a word, marked: "(set la" read as the whole reason. The full one is above and in the report.
            short = textwrap.shorten(str(why), width=60, placeholder=" …")
            table.add_row(r.title, f"[red]{r.status}[/]" if r.status == "failed" else r.status, escape(short))
            continue
        q, d = r.quality, r.vs_baseline
        delta = "baseline" if r.name == "zero-shot" else "–"
        if d is not None:
            mark = "[green]" if d.low > 0 else "[red]" if d.high < 0 else ""
            delta = f"{mark}{d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" + ("[/]" if mark else "")
        drop = (r.canaries or {}).get("drop")
        flag = " [red]![/]" if (r.canaries or {}).get("promotable") is False else ""
        est = f"{_clock(r.estimate.total_s)} / {_clock(r.actual_s)}" if r.estimate and r.actual_s else "–"
        table.add_row(
            r.title + (" [dim](cached)[/]" if r.cached else ""),
            f"{q.value:.3f} [{q.low:.3f}, {q.high:.3f}]" if q.low is not None else f"{q.value:.3f}",
            delta,
            _clock(r.build.wall_s if r.build else None),
            f"{r.serve.latency_p50_s:.1f} s" if r.serve and r.serve.latency_p50_s else "–",
            f"{r.serve.prompt_tokens_per_query:.0f}" if r.serve and r.serve.prompt_tokens_per_query else "–",
            (f"{drop:+.3f}{flag}" if isinstance(drop, int | float) else "–"),
            est,
        )
    return table


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def _quiet_libraries() -> None:
    """The ladder draws its own progress: silence datasets' and transformers' bars and deprecation chatter."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _recommendation_lines(rec: Any) -> list[str]:
    lines = []
    for label, field in (("recommended", "cheapest_equivalent"), ("best quality", "best_quality"),
                         ("limited compute", "limited_compute"), ("lowest latency", "lowest_latency")):  # fmt: skip
        pick = getattr(rec, field, None)
        if pick is None:
            continue
        name = getattr(pick, "rung", pick)
        reason = getattr(pick, "reason", "")
        lines.append(f"[bold]{label}[/]: {escape(str(name))} — {escape(str(reason))}")
    return lines
