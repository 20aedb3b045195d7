"""`tailor ab report | promote`: read an A/B experiment's outcome from the feedback store, and act on it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from tailorlm.cli._common import STORE_HELP, TIME_HELP, console, print_json

app = typer.Typer(help="A/B experiments: which arm do users prefer, and make it the default.", no_args_is_help=True)


@app.command("report")
def report_cmd(
    store: str = typer.Option(..., "--store", "-s", help=STORE_HELP),
    experiment: str = typer.Option(..., "--experiment", "-e", help="The experiment's name (its model name)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="serve.yaml: lists arms without traffic yet."),
    since: str | None = typer.Option(None, "--since", help="Responses from this time. " + TIME_HELP),
    until: str | None = typer.Option(None, "--until", help="Responses before this time. " + TIME_HELP),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="Significance level (CIs are 1-alpha)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Per-arm latency, errors and feedback with CIs, the differences between arms, and whether one wins."""
    from tailorlm.serve.ab import ab_report, find_experiment, load_experiments, render_report
    from tailorlm.serve.ab import as_json as report_json
    from tailorlm.serve.store import open_store
    from tailorlm.serve.traffic import parse_time

    target = find_experiment(load_experiments(config), experiment, str(config)) if config else experiment
    start, end = parse_time(since), parse_time(until)
    st = open_store(store)
    try:
        report = ab_report(st, target, since=start, until=end, alpha=alpha)
    finally:
        st.close()
    if as_json:
        print_json(report_json(report))
    else:
        console.print(render_report(report))


@app.command("promote")
def promote_cmd(
    store: str = typer.Option(..., "--store", "-s", help=STORE_HELP),
    experiment: str = typer.Option(..., "--experiment", "-e", help="The experiment's name (its model name)."),
    arm: str | None = typer.Option(None, "--arm", "-a", help="Promote this arm; default: the report's winner."),
    config: Path | None = typer.Option(None, "--config", "-c", help="serve.yaml: maps the arm to its System."),
) -> None:
    """Send all of the experiment's traffic to one arm's System, on every server sharing the store."""
    from tailorlm.serve.ab import find_experiment, load_experiments, promote
    from tailorlm.serve.store import open_store

    target = find_experiment(load_experiments(config), experiment, str(config)) if config else experiment
    st = open_store(store)
    try:
        system = promote(st, target, arm)
    finally:
        st.close()
    console.print(f"promoted: [bold]{escape(experiment)}[/] now answers with System [bold]{escape(system)}[/]")
