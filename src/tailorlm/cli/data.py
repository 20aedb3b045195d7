"""`tailor data`: validate a dataset file and list the formats tailorlm reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from tailorlm.cli._common import console, print_json
from tailorlm.data import DEFAULT_MAX_RECORD_BYTES, FORMATS, load_dataset
from tailorlm.data.stats import describe
from tailorlm.errors import DataError, TailorError

app = typer.Typer(help="Validate datasets and list the formats tailorlm reads.", no_args_is_help=True)


def _field_options(fields: list[str]) -> dict[str, str]:
    """``["input=question"]`` → ``{"input_field": "question"}``."""
    options = {}
    for item in fields:
        key, sep, column = item.partition("=")
        if not sep or not key or not column:
            raise DataError(f"--field expects KEY=COLUMN (e.g. input=question), got {item!r}")
        options[f"{key.strip()}_field"] = column.strip()
    return options


def _load_tokenizer(spec: str) -> Any:
    # Imported here: loading transformers costs a second, and `--tokenizer none` should not pay it.
    try:
        from tailorlm.models.load import load_tokenizer

        return load_tokenizer(spec)
    except Exception as err:  # any failure here is "no token statistics", and the user must see why
        reason = err.message if isinstance(err, TailorError) else f"{type(err).__name__}: {err}"
        raise TailorError(
            f"could not load tokenizer {spec!r} for token statistics: {reason}",
            hint="pass --tokenizer PATH (a HF model folder) or --tokenizer none to skip token statistics",
        ) from err


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


@app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="A .jsonl/.json/.csv/.tsv/.parquet/.txt file, or a folder of .txt/.md."),
    format: str | None = typer.Option(None, "--format", "-f", help="Skip detection: " + ", ".join(FORMATS) + "."),
    kind: str | None = typer.Option(None, "--kind", "-k", help="chat, preference, text, classification or eval."),
    tokenizer: str = typer.Option(
        "default", "--tokenizer", "-t", help="Tokenizer for token statistics: default, a HF folder, or none."
    ),
    max_record_bytes: int = typer.Option(DEFAULT_MAX_RECORD_BYTES, help="Records larger than this are an issue."),
    extra: str = typer.Option("forbid", help="Unknown keys: forbid (an issue), ignore, or metadata (eval only)."),
    field: list[str] = typer.Option([], "--field", help="Map a column onto a canonical key: KEY=COLUMN, repeatable."),
    columns: str | None = typer.Option(None, help="Comma-separated column names for a CSV/TSV without a header."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of a table."),
) -> None:
    """Check every record of FILE; print each problem as file:line: field: message, or a summary if all is well."""
    dataset = load_dataset(
        file,
        format,  # type: ignore[arg-type]  # load_dataset checks the name and lists the choices
        kind=kind,  # type: ignore[arg-type]
        max_record_bytes=max_record_bytes,
        extra=extra,  # type: ignore[arg-type]
        columns=[c.strip() for c in columns.split(",")] if columns else None,
        **_field_options(field),
    )
    tok = None if tokenizer.lower() == "none" else _load_tokenizer(tokenizer)
    report = describe(dataset, tok)
    if as_json:
        print_json(report)
        return
    table = Table(title="dataset is valid", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("path", "format", "kind", "records", "labels", "fingerprint", "content_sha256"):
        if key in report:
            table.add_row(key, str(report[key]))
    if tokens := report.get("tokens"):
        table.add_row("tokens", "  ".join(f"{k} {_fmt(v)}" for k, v in tokens.items() if k != "count"))
    console.print(table)


@app.command("formats")
def formats(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the dataset formats tailorlm reads, with their keys."""
    rows = [
        {
            "format": s.name,
            "kind": s.kind,
            "required": list(s.required),
            "optional": list(s.optional),
            "description": s.description,
        }
        for s in FORMATS.values()
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("format", "kind", "description")
    for r in rows:
        table.add_row(r["format"], r["kind"], r["description"])
    console.print(table)
    console.print(
        "Containers: .jsonl/.ndjson/.json (list), .csv, .tsv, .parquet, .txt/.md and folders; .gz is read too."
    )
