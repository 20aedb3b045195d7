"""`tailor keys`: create, list and revoke the API keys that `tailor serve` accepts. Each calls one KeyStore method."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from tailorlm.cli._common import console, err_console, print_json
from tailorlm.core.safe_text import safe_cell
from tailorlm.serve.auth import KeyInfo, KeyStore, Scope, default_keys_path

app = typer.Typer(help="Manage API keys for `tailor serve`: create, list, revoke.", no_args_is_help=True)

FILE_OPTION = typer.Option(
    None, "--file", help="Key file. Default: $TAILOR_KEYS_FILE, else the user config dir's tailor/keys.json."
)
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")
MISSING = "—"


def _store(path: Path | None) -> KeyStore:
    return KeyStore(path or default_keys_path())


def _when(ts: float | None) -> str:
    return MISSING if ts is None else f"{datetime.fromtimestamp(ts):%Y-%m-%d %H:%M}"


def _limit(value: int | None) -> str:
    return "default" if value is None else str(value)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="A label for whoever holds the key, e.g. alice-laptop."),
    scope: Scope = typer.Option("user", "--scope", help="user, or admin (may also call the admin endpoints)."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute (default: the server's)."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute (default: the server's)."),
    file: Path | None = FILE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a key and print it once: only its hash is stored, so it cannot be shown again."""
    store = _store(file)
    key, info = store.create(name, scope, rate_limit_rpm=rpm, token_limit_tpm=tpm)
    if as_json:
        print_json({"key": key, **info.model_dump()})
        return
    console.print(
        f"created key [bold]{info.id}[/] ({safe_cell(info.name)}, scope {info.scope}) in {safe_cell(store.path)}"
    )
    # Plain, unwrapped and on its own line, so that it copies whole.
    console.print(key, markup=False, highlight=False, soft_wrap=True)
    err_console.print("[yellow]warning:[/] copy this key now: it is not stored and cannot be shown again.")


@app.command("list")
def list_cmd(file: Path | None = FILE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List keys (revoked ones too) with their scope and limits; never a key or its hash."""
    store = _store(file)
    keys = store.list()
    if as_json:
        print_json([k.model_dump() for k in keys])
        return
    if not keys:
        console.print(f"no keys in {safe_cell(store.path)}; the server runs open, on localhost only")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, header_style="bold")
    for col in ("id", "name", "scope", "created", "revoked", "rpm", "tpm"):
        table.add_column(col, no_wrap=col in ("id", "created", "revoked"))
    for k in keys:
        table.add_row(*_row(k), style="dim" if k.revoked is not None else None)
    console.print(table)


def _row(k: KeyInfo) -> list[str]:
    return [
        k.id,
        safe_cell(k.name),
        k.scope,
        _when(k.created),
        _when(k.revoked),
        _limit(k.rate_limit_rpm),
        _limit(k.token_limit_tpm),
    ]


@app.command("revoke")
def revoke(
    key: str = typer.Argument(..., help="The key's id (k_…) or the name of its active key."),
    file: Path | None = FILE_OPTION,
) -> None:
    """Revoke a key. A running server refuses it from its next request on."""
    started = time.time()
    info = _store(file).revoke(key)
    already = info.revoked is not None and info.revoked < started
    verb = "was already revoked" if already else "revoked"
    console.print(f"{verb}: {info.id} ({safe_cell(info.name)}) at {_when(info.revoked)}")
