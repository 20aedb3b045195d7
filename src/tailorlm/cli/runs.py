"""`tailor runs`: list, show and compare run directories. Each command calls one function in core/run.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich import box
from rich.table import Table

from tailorlm.cli._common import console, print_json
from tailorlm.core.run import compare_runs, describe_run, list_runs
from tailorlm.core.safe_text import safe_cell

app = typer.Typer(help="Inspect runs: list them, show one, compare their metrics.", no_args_is_help=True)

ROOT_OPTION = typer.Option(Path("runs"), "--root", help="Folder that holds the run directories.")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")

_STATUS_STYLE = {
    "complete": "green",
    "running": "cyan",
    "failed": "red",
    "interrupted": "yellow",
    "corrupt": "magenta",
}
MISSING = "—"


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{safe_cell(status)}[/]"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _value(v: Any) -> str:
    if v is None:
        return MISSING
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@app.command("list")
def list_cmd(root: Path = ROOT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List runs, newest first, with status, duration and headline metrics."""
    runs = list_runs(root)
    if as_json:
        print_json([r.to_dict() for r in runs])
        return
    if not runs:
        console.print(f"no runs in {root}")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, header_style="bold")
    # The id is what users copy into `runs show`, so it is never cut. The id already ends with the run's name,
    # so on a narrow terminal the name column gives its room to the metrics.
    columns = ["id", "status", "name", "kind", "created", "duration"]
    if console.width < 110:
        columns.remove("name")
    rows = [
        {
            "id": r.id,
            "status": r.status,
            "name": r.name or MISSING,
            "kind": r.kind or MISSING,
            "created": f"{r.created_at:%m-%d %H:%M}" if r.created_at else MISSING,
            "duration": _duration(r.duration_s),
        }
        for r in runs
    ]
    for col in columns:
        table.add_column(col, no_wrap=True, min_width=max(len(col), *(len(row[col]) for row in rows)))
    table.add_column("metrics", overflow="fold")
    for r, row in zip(runs, rows, strict=True):
        # Names, kinds and metric keys come from run folders on disk: no markup, no raw control characters.
        metrics = "\n".join(safe_cell(f"{k}={_value(v)}") for k, v in r.headline_metrics.items())
        cells = [_status(row[c]) if c == "status" else safe_cell(row[c]) for c in columns]
        table.add_row(*cells, metrics or MISSING)
    console.print(table)


@app.command("show")
def show_cmd(
    run: str = typer.Argument(..., help="Run id, id prefix, name, path, or 'latest'."),
    root: Path = ROOT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one run: metadata, config, metrics, artifacts and lineage."""
    d = describe_run(run, root)
    if as_json:
        print_json(d)
        return
    meta = d["meta"]
    console.print(f"[bold]{d['id']}[/]  {_status(d['status'])}", highlight=False)
    facts = {
        "path": d["path"],
        "kind": d["kind"],
        "created": d["created_at"],
        "finished": d["finished_at"],
        "duration": _duration(d["duration_s"]),
        "seed": d["seed"],
        "host": f"{meta.get('hostname')} (pid {meta.get('pid')})",
        "git": (meta.get("git") or {}).get("commit"),
        "error": d["error"],
    }
    for key, value in facts.items():
        if value is not None:
            console.print(f"  [dim]{key:>9}[/] {value}", highlight=False)
    versions = meta.get("versions") or {}
    if versions:
        console.print("  [dim] versions[/] " + ", ".join(f"{k} {v}" for k, v in versions.items()), highlight=False)
    lin = d["lineage"]
    if lin["ancestors"] or lin["children"]:
        console.print("\n[bold]lineage[/]")
        for ancestor in lin["ancestors"]:
            console.print(f"  ↑ {ancestor}", highlight=False)
        for child in lin["children"]:
            console.print(f"  ↓ {child}", highlight=False)
    if meta.get("datasets"):
        console.print("\n[bold]datasets[/]")
        for ds in meta["datasets"]:
            line = f"  {ds.get('name')}: {ds.get('path')} ({ds.get('n_records')} records, {ds.get('fingerprint')})"
            console.print(line, highlight=False)
    if d["config"]:
        console.print("\n[bold]config[/]")
        console.print(yaml.safe_dump(d["config"], sort_keys=False).rstrip(), highlight=False, markup=False)
    if d["metrics"]:
        console.print("\n[bold]metrics[/]")
        for key, value in d["metrics"].items():
            console.print(f"  {key}: {_value(value)}", highlight=False)
    if d["artifacts"]:
        console.print("\n[bold]artifacts[/]")
        for a in d["artifacts"]:
            console.print(f"  {a['path']} ({a['bytes']:,} B)", highlight=False)


@app.command("compare")
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="Two or more runs (ids, prefixes, names or paths)."),
    root: Path = ROOT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Metrics side by side: one row per metric, one column per run."""
    c = compare_runs(runs, root)
    if as_json:
        print_json(c)
        return
    table = Table(show_edge=False, header_style="bold")
    table.add_column("metric")
    ids = [r["id"] for r in c["runs"]]
    for r in c["runs"]:
        table.add_column(f"{safe_cell(r['id'])}\n{_status(r['status'])}", justify="right", overflow="fold")
    for metric, values in c["metrics"].items():
        table.add_row(safe_cell(metric), *(safe_cell(_value(values.get(i))) for i in ids))
    if not c["metrics"]:
        console.print("none of these runs recorded metrics")
    console.print(table)
