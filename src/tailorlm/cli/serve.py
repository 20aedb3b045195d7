"""`tailor serve`: serve Systems behind an OpenAI-compatible API, with feedback, A/B tests and a web UI.

`tailor serve --report` summarizes a period of the served traffic from the feedback store instead.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from tailorlm.cli._common import console, err_console, print_json
from tailorlm.core.config import parse_override
from tailorlm.serve.config import ServeConfig


def serve(
    systems: list[str] = typer.Argument(None, help="Systems to serve: system.yaml files or folders holding one."),
    config: Path = typer.Option(None, "--config", "-c", help="serve.yaml (keys, limits, experiments, store…)."),
    host: str = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default 8000)."),
    store: str = typer.Option(None, "--store", help="Feedback store: a SQLite path or a postgresql:// URL."),
    keys_file: Path = typer.Option(None, "--keys-file", help="API keys file (`tailor keys create` writes it)."),
    allow_open: bool = typer.Option(False, "--allow-open", help="Serve without keys on a non-loopback address."),
    set_: list[str] = typer.Option(None, "--set", help="Override a serve.yaml key, e.g. limits.max_tokens=256."),
    report: bool = typer.Option(False, "--report", help="Summarize served traffic from the store and exit."),
    since: str = typer.Option("-7d", "--since", help="With --report: start of the period (ISO time or -1h, -7d)."),
    until: str = typer.Option(None, "--until", help="With --report: end of the period (default: now)."),
    as_json: bool = typer.Option(False, "--json", help="With --report: print JSON."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve Systems with an OpenAI-compatible API (chat, completions, embeddings, models, feedback) and a web UI."""
    overrides = list(set_ or [])
    for key, value in (("host", host), ("port", port), ("store", store), ("keys_file", keys_file)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if allow_open:
        overrides.append("allow_open=true")
    for text in overrides:
        parse_override(text)  # a malformed override fails here, naming itself
    cfg = ServeConfig.load(config, overrides)
    if systems:
        cfg = cfg.model_copy(update={"systems": [*cfg.systems, *systems]})
    if config is not None:  # systems listed in serve.yaml are relative to it
        base = config.parent
        cfg = cfg.model_copy(
            update={
                "systems": [s if Path(s).is_absolute() or s in (systems or []) else str(base / s) for s in cfg.systems]
            }
        )
    if report:
        _report(cfg, since, until, as_json)
        return
    from tailorlm.serve.server import build_state, run

    with err_console.status("loading Systems…"):
        state = build_state(cfg)
    where = f"http://{cfg.host}:{cfg.port}"
    err_console.print(f"serving [bold]{escape(', '.join(state.model_names()))}[/] at {where}/v1  (web UI: {where}/)")
    if state.open:
        err_console.print("[yellow]no API keys: open to anyone who can reach this address[/]")
    run(state, log_level=log_level)


def _report(cfg: ServeConfig, since: str, until: str | None, as_json: bool) -> None:
    from tailorlm.serve.store import open_store
    from tailorlm.serve.traffic import as_json as traffic_json
    from tailorlm.serve.traffic import parse_time, render_traffic, traffic_report

    store = open_store(cfg.store)
    try:
        report = traffic_report(store, since=parse_time(since), until=parse_time(until) if until else None)
    finally:
        store.close()
    if as_json:
        print_json(traffic_json(report))
        return
    console.print(render_traffic(report))
