"""`tailor eval SYSTEM --task task.yaml` and `tailor eval compare RUN_A RUN_B`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import ENGINE_HELP, console, err_console, print_json, with_engine
from tailorlm.core.system import SYSTEM_FILE, System
from tailorlm.core.task import Task


class _DefaultToRun(typer.core.TyperGroup):
    """`tailor eval X …` means `tailor eval run X …` unless X names a subcommand (e.g. `compare`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultToRun, help="Evaluate a System on a Task, and compare evaluations.", no_args_is_help=True
)


def _system_from(spec: str) -> System:
    """A system.yaml, a folder holding one, or a bare model spec (``default``, an HF folder, a hub id)."""
    path = Path(spec)
    if path.is_file() or (path.is_dir() and (path / SYSTEM_FILE).is_file()):
        return System.load(path)
    return System(name=Path(spec).name or spec, model=spec)


def _fmt(m: dict[str, Any]) -> str:
    return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


@app.command("run")
def run(
    system: str = typer.Argument(..., help="system.yaml, a folder holding one, or a model spec such as `default`."),
    task: Path = typer.Option(..., "--task", "-t", help="The task.yaml to evaluate on."),
    overrides: list[str] = typer.Argument(None, help="Dotted task overrides, e.g. eval.limit=20."),
    limit: int = typer.Option(None, "--limit", "-n", help="Evaluate only the first N examples."),
    batch_size: int = typer.Option(8, "--batch-size"),
    root: Path = typer.Option(Path("runs"), "--root", help="Where runs are written."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Regenerate every prediction."),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    engine: str = typer.Option(None, "--engine", help=ENGINE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json."),
) -> None:
    """Evaluate SYSTEM on a task; writes predictions.jsonl and metrics.json (with bootstrap CIs) into a run."""
    from tailorlm.eval.runner import EvalConfig, evaluate

    task_ = Task.load(task, overrides or [])
    system_ = with_engine(_system_from(system), engine)
    config = EvalConfig(
        task=str(task),
        system=system,
        limit=limit,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        use_cache=not no_cache,
    )
    result = evaluate(system_, task_, config=config, root=root, progress=not as_json)
    print_result(result, as_json)


def print_result(result: Any, as_json: bool) -> None:
    """Metrics with CIs, cost and the run path (or metrics.json as JSON)."""
    if as_json:
        print_json({"run": str(result.run.path), **result.metrics})
        return
    m = result.metrics
    table = Table(title=f"{escape(m['task'])} · {escape(m['system'])} · n={m['n']}")
    table.add_column("metric")
    table.add_column("value [95% CI]", justify="right")
    for name, vals in m["metrics"].items():
        table.add_row(name, _fmt(vals))
    console.print(table)
    cost = m["cost"]
    console.print(
        f"{cost['generated']} generated, {cost['cached']} from cache · {cost['wall_s']:.1f} s · "
        f"p50 latency {cost['latency_p50_s'] or 0:.2f} s · {cost['tokens_per_s'] or 0} tokens/s · "
        f"{cost['prompt_tokens_per_example']} prompt tokens/example · peak {cost['peak_rss_mb']:.0f} MB"
        f" · engine {(m.get('engine') or {}).get('engine', 'hf')}",
        highlight=False,
    )
    if "canaries" in m:
        c = m["canaries"]
        flag = "[green]promotable[/]" if c.get("promotable", True) else "[bold red]NOT promotable[/]"
        console.print(f"canaries: before {c.get('before')} → after {c.get('after')} · {flag}", highlight=False)
    console.print(f"run: {result.run.path}", highlight=False)


@app.command("compare")
def compare(
    run_a: str = typer.Argument(..., help="Baseline eval run (id, prefix, name or path)."),
    run_b: str = typer.Argument(..., help="Eval run to compare against the baseline."),
    root: Path = typer.Option(Path("runs"), "--root"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-metric difference B − A on shared examples, with a paired-bootstrap CI and p-value."""
    from tailorlm.eval.compare import compare_eval_runs

    result = compare_eval_runs(run_a, run_b, root=root)
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{result['b']} − {result['a']} (n={result['n_shared']} shared examples)")
    for col in ("metric", "A", "B", "B − A [95% CI]", "p (bootstrap)", "p (permutation)"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for row in result["metrics"]:
        better = (row["diff"] > 0) == row["higher_is_better"]
        significant = row["p_value"] < 0.05
        colour = ("green" if better else "red") if significant else "white"
        p_perm = "—" if row["p_permutation"] is None else f"{row['p_permutation']:.3f}"
        table.add_row(
            row["metric"],
            f"{row['a']:.3f}",
            f"{row['b']:.3f}",
            f"[{colour}]{row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}][/]",
            f"{row['p_value']:.3f}",
            p_perm,
        )
    console.print(table)
    err_console.print("[dim]green/red: significant at p < 0.05 (better/worse); white: not significant[/]")


# `tailor eval winrate`: two Systems' answers judged by a reward model (lives with the preference commands).
from tailorlm.cli.train_align import winrate  # noqa: E402

app.command("winrate")(winrate)
