"""`tailor`: the command table. Each command group lives in its own file and calls one library function."""

from __future__ import annotations

import os

import typer

from tailorlm import __version__
from tailorlm.cli import (
    ab,
    cai,
    data,
    demo,
    feedback,
    generate,
    init,
    keys,
    ladder,
    probe,
    prompt,
    rag,
    report,
    runs,
    serve,
    train,
)
from tailorlm.cli import eval as eval_cli
from tailorlm.cli._common import TailorGroup
from tailorlm.models.weights import ALLOW_PICKLE_ENV

app = typer.Typer(
    cls=TailorGroup,
    name="tailor",
    help="Tailor a language model to one use case, and measure what each step bought.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

app.command("generate")(generate.generate)
app.command("cai")(cai.cai)
app.command("chat")(generate.chat)
app.command("demo")(demo.demo)
app.command("init")(init.init)
app.command("ladder")(ladder.ladder)
app.command("report")(report.report)
app.command("merge")(train.merge)
app.command("serve")(serve.serve)
app.add_typer(data.app, name="data")
app.add_typer(runs.app, name="runs")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(prompt.app, name="prompt")
app.add_typer(rag.app, name="rag")
app.add_typer(train.app, name="train")
app.add_typer(feedback.app, name="feedback")
app.add_typer(ab.app, name="ab")
app.add_typer(keys.app, name="keys")
app.add_typer(probe.app, name="probe")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tailorlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Load pickle weights (pytorch_model.bin) you trust; as TAILOR_ALLOW_PICKLE=1."
    ),
) -> None:
    """Tailor a language model to one use case, and measure what each step bought."""
    if allow_pickle:
        # The environment, not a global: subprocesses (accelerate launch, eval workers) inherit the choice.
        os.environ[ALLOW_PICKLE_ENV] = "1"


if __name__ == "__main__":
    app()
