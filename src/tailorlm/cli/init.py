"""`tailor init DIR`: write a commented task.yaml from the data in DIR, check it, and say what the ladder will run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import console, print_json
from tailorlm.errors import DataError
from tailorlm.ladder.scaffold import ScaffoldResult, scaffold


def _fields(items: list[str]) -> dict[str, str]:
    """``["input=question"]`` → ``{"input": "question"}``, as `tailor data validate --field` takes them."""
    fields = {}
    for item in items:
        key, sep, column = item.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise DataError(f"--field expects KEY=COLUMN (e.g. input=question), got {item!r}")
        fields[key.strip()] = column.strip()
    return fields


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _data_row(n: int | None, what: str, path: str | None) -> str:
    # Paths as task.yaml holds them (relative to the task folder): what the user will edit.
    return "—" if n is None else f"{_plural(n, what)}  [dim]{path}[/]"


def _print(result: ScaffoldResult, directory: Path) -> None:
    report, task, choice = result.report, result.task, result.draft.choice
    console.print(f"[green]wrote[/] {result.task_file}", highlight=False, soft_wrap=True)
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    summary.add_row("task", task.name)
    fields = ", ".join(f"{k} ← {v}" for k, v in task.eval.fields.items())
    eval_row = _data_row(report.eval_n, "example", task.eval.path) + (f"  ({fields})" if fields else "")
    summary.add_row("eval", eval_row)
    kind = {"eval": "input/reference record", "chat": "chat record"}.get(report.train_kind or "", "record")
    summary.add_row("train", _data_row(report.train_n, kind, task.train.path if task.train else None))
    docs = "—"
    if report.documents_n is not None and task.documents is not None:
        docs = f"{_plural(report.documents_n, 'file')}, {_plural(report.documents_records or 0, 'document')}"
        docs += f"  [dim]{task.documents.path}[/]"
    summary.add_row("documents", docs)
    summary.add_row(
        "preference", _data_row(report.preference_n, "pair", task.preference.path if task.preference else None)
    )
    primary = f" (primary {task.primary})" if len(task.metrics) > 1 else ""
    summary.add_row("metrics", f"{', '.join(task.metrics)}{primary}: {choice.reason}")
    summary.add_row("generation", f"max_new_tokens {task.generation.max_new_tokens}")
    console.print(summary, highlight=False)

    rungs = Table("rung", "runs", "why not", title="ladder rungs", title_justify="left")
    for rung in result.rungs:
        why = escape(rung.reason or "") + (f"\n[bold]fix[/]: {escape(rung.fix)}" if rung.fix else "")
        rungs.add_row(rung.title, "[green]yes[/]" if rung.applies else "[dim]no[/]", why)
    console.print(rungs)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"next: [bold]{result.next_command(directory)}[/]", highlight=False, soft_wrap=True)


def init(
    directory: Path = typer.Argument(..., help="The task folder: task.yaml is written here (created if missing)."),
    eval_file: Path | None = typer.Option(
        None, "--eval", help="Questions with reference answers. Default: eval.jsonl/.json/.csv/.parquet, test.jsonl…"
    ),
    documents: Path | None = typer.Option(
        None, "--documents", help="Knowledge documents (folder or file). Default: docs/, documents/ or knowledge/."
    ),
    train: Path | None = typer.Option(None, "--train", help="Training data. Default: train.jsonl or train.csv."),
    preference: Path | None = typer.Option(
        None, "--preference", help="Preference pairs. Default: preference(s).jsonl or prefs.jsonl."
    ),
    name: str | None = typer.Option(None, "--name", help="Task name, used in run ids. Default: the folder's name."),
    field: list[str] = typer.Option(
        [], "--field", help="Map an eval column onto a key when the guess is wrong: KEY=COLUMN, repeatable."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing task.yaml."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of tables."),
) -> None:
    """Write DIR/task.yaml for the data in DIR, check every file, and list the ladder rungs that will run.

    Paths given as options are relative to the current directory; task.yaml stores them relative to DIR when they
    are inside it. Nothing is written if a check fails.
    """
    result = scaffold(
        directory,
        eval=eval_file,
        documents=documents,
        train=train,
        preference=preference,
        name=name,
        fields=_fields(field),
        force=force,
    )
    if as_json:
        print_json(result.to_dict(directory))
        return
    _print(result, directory)
