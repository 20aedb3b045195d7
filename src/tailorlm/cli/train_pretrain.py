"""`tailor train pretrain`: continued pretraining on a folder of raw text; held-out perplexity before and after."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tailorlm.cli._common import console, err_console
from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.errors import ConfigError


def pretrain(
    recipe: str = typer.Argument(None, help="Recipe YAML (optional with --resume: the run's config.yaml is used)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. data.path=corpus/ training.max_steps=9."),
    resume: Path = typer.Option(None, "--resume", help="Run directory to continue from its latest checkpoint."),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where new run directories are created."),
) -> None:
    """Continued pretraining (domain adaptation) from RECIPE.yaml on raw text (txt, md, html, pdf, docx, jsonl...).

    Prints held-out perplexity before → after, the canaries, and the System's path.
    """
    import datasets
    from transformers.utils import logging as hf_logging

    from tailorlm.cli.train import _fmt, _progress_callback
    from tailorlm.train.pretrain import PretrainRecipe, fit

    overrides = list(overrides or [])
    # With --resume the recipe may be left out, and the first positional argument is then an override.
    if recipe is not None and "=" in recipe and not Path(recipe).is_file():
        overrides.insert(0, recipe)
        recipe = None
    if recipe is None and resume is None:
        raise ConfigError("give a recipe YAML (or --resume RUN_DIR)", hint="see recipes/pretrain-lora.yaml")
    source = Path(recipe) if recipe else resume / "config.yaml"
    cfg = load_config(PretrainRecipe, source, overrides)

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
    )
    if resume is not None:
        run = Run.reopen(resume)
    else:
        run = Run.create(
            cfg.name, root=runs_root, config=cfg, seed=cfg.training.seed, parent=cfg.system, kind="pretrain"
        )
    with run, progress:
        fit(cfg, run, resume=resume is not None, callbacks=[_progress_callback(progress)])

    m = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    # One row per metric: the before → after pairs stay readable in a narrow terminal.
    table = Table(title=f"pretrain · {escape(cfg.strategy.method)} · run {escape(run.id)}")
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    table.add_row("steps", str(m.get("steps")))
    table.add_row("train loss", _fmt(m.get("train_loss")))
    if ppl := m.get("perplexity"):
        change = ppl["after"] / ppl["before"] - 1
        held = f"{ppl['tokens']} tokens, {ppl['blocks']} blocks"
        table.add_row("held-out perplexity", f"{ppl['before']:.2f} → {ppl['after']:.2f} ({change:+.1%}; {held})")
    else:
        table.add_row("held-out perplexity", "– (no held-out text: eval_fraction=0 and no eval_data)")
    if c := m.get("canaries"):
        verdict = "[green]ok[/]" if c.get("promotable", True) else f"[red]forgetting: over max_drop {c['max_drop']}[/]"
        table.add_row("canaries", f"{c['before']:.3f} → {c['after']:.3f} (drop {c['drop']:+.3f}) {verdict}")
    table.add_row("tokens/s", _fmt(m.get("tokens_per_s"), ".1f"))
    table.add_row("peak RSS MB", _fmt(m.get("peak_rss_mb"), ".0f"))
    table.add_row("System", escape(str(run.artifacts / "system.yaml")))
    console.print(table)
    console.print(f"use it: tailor generate --system {escape(str(run.artifacts))} 'your text'", highlight=False)
