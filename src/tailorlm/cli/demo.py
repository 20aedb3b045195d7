"""`tailor demo`: the main job until the ladder lands."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import console, err_console, print_json
from tailorlm.demo import DemoConfig, run_demo


def demo(
    model: str = typer.Option("default", "--model", "-m", help="Model spec to demonstrate."),
    root: Path = typer.Option(Path("runs"), "--root", help="Where the run directory is written."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Load the default model, answer three questions in one batch, and print a table."""
    with err_console.status("loading the model and answering…"):
        result = run_demo(DemoConfig(model=model, device=device), root=root)
    rows = [
        {"question": q, "answer": c.text, "correct": ok, "tokens": c.usage.completion_tokens}
        for q, c, ok in zip(result.questions, result.completions, result.correct, strict=True)
    ]
    if as_json:
        print_json({"run": str(result.run.path), "rows": rows, "load_s": result.load_seconds})
        return
    table = Table(title=f"tailorlm demo — {escape(model)}", show_lines=True)
    table.add_column("question")
    table.add_column("answer", overflow="fold")
    table.add_column("expected\nword", justify="center")
    table.add_column("tokens", justify="right")
    for row in rows:
        mark = "[green]✓[/]" if row["correct"] else "[red]✗[/]"
        table.add_row(escape(row["question"]), escape(row["answer"]), mark, str(row["tokens"]))
    console.print(table)
    tokens = sum(r["tokens"] for r in rows)
    console.print(
        f"loaded in {result.load_seconds:.1f} s · {tokens} tokens in {result.generate_seconds:.1f} s "
        f"({tokens / max(result.generate_seconds, 1e-9):.0f} tokens/s, batched) · run: {result.run.path}",
        highlight=False,
    )
    console.print("Next: [bold]tailor chat[/] to talk to it, [bold]tailor runs list[/] to see the run.")
