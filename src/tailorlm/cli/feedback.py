"""`tailor feedback export`: served feedback → SFT, preference and binary (KTO) training files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tailorlm.cli._common import STORE_HELP, TIME_HELP, console, print_json

app = typer.Typer(help="Turn the feedback collected by `tailor serve` into training data.", no_args_is_help=True)


@app.command("export")
def export_cmd(
    store: str = typer.Option(..., "--store", "-s", help=STORE_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for sft.jsonl, preference.jsonl, binary.jsonl."),
    since: str | None = typer.Option(None, "--since", help="Feedback given from this time. " + TIME_HELP),
    until: str | None = typer.Option(None, "--until", help="Feedback given before this time. " + TIME_HELP),
    model: str | None = typer.Option(None, "--model", help="Only feedback on this model or System name."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Write the files `tailor train` and a task's `preference:` read, plus a manifest of what was skipped."""
    from tailorlm.serve.export import FILES, export_feedback
    from tailorlm.serve.store import open_store
    from tailorlm.serve.traffic import parse_time

    start, end = parse_time(since), parse_time(until)
    st = open_store(store)
    try:
        counts = export_feedback(st, out, since=start, until=end, model=model)
    finally:
        st.close()
    if as_json:
        print_json(counts | {"out": str(out)})
        return
    table = Table("file", "format", "records", title=f"exported {counts['feedback']} feedback", title_justify="left")
    for name, (filename, fmt, _) in FILES.items():
        table.add_row(filename, fmt, str(counts[name]))
    console.print(table)
    console.print(f"{counts['skipped']} candidate record(s) skipped; reasons in manifest.json", highlight=False)
