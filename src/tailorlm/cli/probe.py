"""`tailor probe fairness SYSTEM --task task.yaml` and `tailor probe harmless SYSTEM`: bias and safety probes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import ENGINE_HELP, console, print_json, with_engine
from tailorlm.cli.eval import _system_from
from tailorlm.core.task import Task

app = typer.Typer(
    help="Bias and safety probes: counterfactual fairness on a task's eval set, refusals on red-team prompts.",
    no_args_is_help=True,
)

SYSTEM_ARG = "system.yaml, a folder holding one (a run's artifacts), or a model spec such as `default`."


def _limits(limits: list[str]) -> None:
    console.print("[bold]What this check cannot show:[/]")
    for line in limits:
        console.print(f"[dim]- {escape(line)}[/]", highlight=False)


@app.command("fairness")
def fairness(
    system: str = typer.Argument(..., help=SYSTEM_ARG),
    task: Path = typer.Option(..., "--task", "-t", help="The task.yaml whose eval inputs are swapped."),
    overrides: list[str] = typer.Argument(None, help="Dotted task overrides, e.g. eval.limit=100."),
    limit: int = typer.Option(None, "--limit", "-n", help="Probe at most N records that hold a swappable term."),
    swaps: list[Path] = typer.Option(None, "--swaps", help="Swap list YAML (repeatable); default: packaged."),
    batch_size: int = typer.Option(8, "--batch-size"),
    root: Path = typer.Option(Path("runs"), "--root", help="Where the probe's eval run is written."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Regenerate every prediction."),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    engine: str = typer.Option(None, "--engine", help=ENGINE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Swap gendered words, first names and nationalities in the eval inputs; report answer changes and group gaps."""
    from tailorlm.eval.probes.fairness import probe_fairness
    from tailorlm.eval.probes.report import pct

    report = probe_fairness(
        with_engine(_system_from(system), engine),
        Task.load(task, overrides or []),
        limit=limit,
        swap_files=swaps or None,
        root=root,
        progress=not as_json,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        use_cache=not no_cache,
    )
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    probed = f"{report.n_probed} of {report.n_scanned} probed"
    table = Table(title=f"fairness · {escape(report.task)} · {escape(report.system)} · {probed}")
    for col in ("axis", "records", "answer changed [95% CI]", f"{report.primary_metric} by group", "gap [95% CI]"):
        table.add_column(col, justify="right" if col in ("records", "answer changed [95% CI]") else "left")
    for a in report.axes:
        groups = "\n".join(f"{g} {m.value:.3f} [{m.low:.3f}, {m.high:.3f}]" for g, m in a.by_group.items())
        gap = "—"
        if a.gap is not None:
            ci = "" if a.gap.low is None else f" [{a.gap.low:+.3f}, {a.gap.high:+.3f}]"
            gap = f"{a.gap.high_group} − {a.gap.low_group}\n{a.gap.diff:+.3f}{ci}"
        table.add_row(a.axis, str(a.n_probed), pct(a.change_rate), groups, gap)
    console.print(table)
    if report.change_rate is not None:
        console.print(
            f"answer changed under some swap: {pct(report.change_rate)} "
            f"({report.change_rate.k} of {report.change_rate.n} records) · {report.n_not_probed} records not probed "
            f"(no swappable term) · {report.generated} generated, {report.cached} from cache",
            highlight=False,
        )
    _limits(report.limits)
    if report.run:
        console.print(f"run: {report.run}", highlight=False)


@app.command("harmless")
def harmless(
    system: str = typer.Argument(..., help=SYSTEM_ARG),
    prompts: Path = typer.Option(None, "--prompts", help='JSONL of {"prompt", "category"?}; default: packaged.'),
    reward_model: str = typer.Option(None, "--reward-model", help="Score the answers with this trained reward model."),
    judge: str = typer.Option(None, "--judge", help="Grade the answers 1-10 with this judge model or system.yaml."),
    limit: int = typer.Option(None, "--limit", "-n", help="Use only the first N prompts."),
    max_tokens: int = typer.Option(128, "--max-tokens", help="Longest answer, in tokens."),
    batch_size: int = typer.Option(8, "--batch-size"),
    root: Path = typer.Option(Path("runs"), "--root", help="Where the probe's run is written."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Regenerate every answer."),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    engine: str = typer.Option(None, "--engine", help=ENGINE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Answer red-team prompts; report the refusal rate per category (and a reward or judge score)."""
    from tailorlm.eval.probes.harmlessness import probe_harmlessness
    from tailorlm.eval.probes.report import pct

    report = probe_harmlessness(
        with_engine(_system_from(system), engine),
        prompts=prompts,
        limit=limit,
        max_new_tokens=max_tokens,
        reward_model=reward_model,
        judge=judge,
        root=root,
        progress=not as_json,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        use_cache=not no_cache,
    )
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    table = Table(title=f"harmlessness · {escape(report.system)} · {report.n} red-team prompts")
    table.add_column("category")
    table.add_column("prompts", justify="right")
    table.add_column("refused [95% CI]", justify="right")
    for cat, r in report.by_category.items():
        table.add_row(cat, str(r.n), pct(r))
    table.add_section()
    table.add_row("[bold]all[/]", str(report.n), f"[bold]{pct(report.refusal_rate)}[/]")
    console.print(table)
    for s in (report.reward, report.judge):
        if s is not None:
            value = "no answer could be scored" if s.mean is None else f"{s.mean:.3f} [{s.low:.3f}, {s.high:.3f}]"
            console.print(f"mean score, {escape(s.scorer)}: {value} (n={s.n})", highlight=False)
    console.print(f"{report.generated} generated, {report.cached} from cache", highlight=False)
    _limits(report.limits)
    console.print(f"run: {report.run}", highlight=False)
