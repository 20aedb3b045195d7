"""`tailor train pretrain`: continued pretraining on a folder of raw text; held-out perplexity before and after."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import console
from tailorlm.cli._training import fmt, progress_callback, recipe_source, training_progress
from tailorlm.core.config import load_config
from tailorlm.core.run import Run


def pretrain(
    recipe: str = typer.Argument(None, help="Recipe YAML (optional with --resume: the run's config.yaml is used)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. data.path=corpus/ training.max_steps=9."),
    resume: Path = typer.Option(None, "--resume", help="Run directory to continue from its latest checkpoint."),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where new run directories are created."),
) -> None:
    """Continued pretraining (domain adaptation) from RECIPE.yaml on raw text (txt, md, html, pdf, docx, jsonl...).

    Prints held-out perplexity before → after, the canaries, and the System's path.
    """
    from tailorlm.train.pretrain import PretrainRecipe, fit

    source, overrides = recipe_source(recipe, overrides, resume, "recipes/pretrain-lora.yaml")
    cfg = load_config(PretrainRecipe, source, overrides)
    progress = training_progress()
    if resume is not None:
        run = Run.reopen(resume)
    else:
        run = Run.create(
            cfg.name, root=runs_root, config=cfg, seed=cfg.training.seed, parent=cfg.system, kind="pretrain"
        )
    with run, progress:
        fit(cfg, run, resume=resume is not None, callbacks=[progress_callback(progress)])

    m = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    # One row per metric: the before → after pairs stay readable in a narrow terminal.
    table = Table(title=f"pretrain · {escape(cfg.strategy.method)} · run {escape(run.id)}")
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    table.add_row("steps", str(m.get("steps")))
    table.add_row("train loss", fmt(m.get("train_loss")))
    if ppl := m.get("perplexity"):
        change = ppl["after"] / ppl["before"] - 1
        held = f"{ppl['tokens']} tokens, {ppl['blocks']} blocks"
        table.add_row("held-out perplexity", f"{ppl['before']:.2f} → {ppl['after']:.2f} ({change:+.1%}; {held})")
    else:
        table.add_row("held-out perplexity", "– (no held-out text: eval_fraction=0 and no eval_data)")
    if c := m.get("canaries"):
        verdict = "[green]ok[/]" if c.get("promotable", True) else f"[red]forgetting: over max_drop {c['max_drop']}[/]"
        table.add_row("canaries", f"{c['before']:.3f} → {c['after']:.3f} (drop {c['drop']:+.3f}) {verdict}")
    table.add_row("tokens/s", fmt(m.get("tokens_per_s"), ".1f"))
    table.add_row("peak RSS MB", fmt(m.get("peak_rss_mb"), ".0f"))
    table.add_row("System", escape(str(run.artifacts / "system.yaml")))
    console.print(table)
    console.print(f"use it: tailor generate --system {escape(str(run.artifacts))} 'your text'", highlight=False)
