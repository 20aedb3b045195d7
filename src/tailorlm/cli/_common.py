"""Shared CLI plumbing: the consoles, error rendering and `--json` output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from tailorlm.core.safe_text import printable
from tailorlm.errors import DataError, TailorError

console = Console()
# Errors and progress go to stderr so that `--json` output on stdout stays machine-readable.
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout, uncoloured, for scripts and `jq`."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def render_error(err: TailorError) -> None:
    # Messages quote file names, keys and values: ``[/]`` in one must not be Rich markup (a MarkupError), and an
    # ESC or a bidi override must not reach the terminal raw. Newlines stay: a ConfigError has one line per problem.
    message = escape(printable(err.message, keep="\n"))
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    if isinstance(err, DataError):
        for issue in err.issues[:50]:
            err_console.print(f"  {printable(str(issue))}", highlight=False, markup=False, soft_wrap=True)
        if len(err.issues) > 50:
            err_console.print(f"  … and {len(err.issues) - 50} more", highlight=False)
    if err.hint:
        hint = escape(printable(err.hint, keep="\n"))
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)


class TailorGroup(TyperGroup):
    """Root command group: a ``TailorError`` anywhere below becomes a clean message and a non-zero exit.

    So does a full disk, an out-of-memory or an unwritable folder (``core/limits.resource_error``). Bugs (any other
    exception) keep their traceback, because those are ours to fix, not the user's.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TailorError as err:
            render_error(err)
            raise typer.Exit(err.exit_code) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.exceptions.ClickException):
            raise
        except (OSError, MemoryError, RuntimeError) as err:
            # A full disk, an out-of-memory or an unwritable folder is the machine's state, not our bug: one line
            # that says what ran out and what to do (core/limits.py). Anything else keeps its traceback.
            from tailorlm.core.limits import resource_error

            friendly = resource_error(err)
            if friendly is None:
                raise
            render_error(friendly)
            raise typer.Exit(friendly.exit_code) from None


ENGINE_HELP = (
    "auto (ct2 on a CPU where it answers as hf does, else hf), hf, ct2, openai or vllm; default: the System's."
)


def with_engine(system: Any, engine: str | None) -> Any:
    """``system`` answered by ``engine`` (``--engine``), validated like a system.yaml's ``engine:``."""
    from typing import get_args

    from tailorlm.errors import ConfigError

    if not engine:
        return system
    names = get_args(type(system).model_fields["engine"].annotation)
    if engine not in names:
        raise ConfigError(f"--engine {engine!r} is not an engine", hint=f"use one of: {', '.join(names)}")
    return system.model_copy(update={"engine": engine})


# The serving commands (feedback, ab) name the store and a period the same way.
STORE_HELP = "Feedback store: a SQLite file or a postgresql:// URL (as given to `tailor serve`)."
TIME_HELP = "ISO 8601 (2025-03-01T12:00Z), a duration ago (-1h, -7d, 30m) or now."
