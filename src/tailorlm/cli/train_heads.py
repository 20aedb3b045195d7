"""`tailor train classify`: a classification or regression head on the LM backbone; the result is a System."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import console
from tailorlm.cli._training import fmt, progress_callback, training_progress
from tailorlm.core.config import load_config
from tailorlm.core.run import Run


def _results_table(m: dict[str, Any], title: str, system_path: Path) -> Table:
    """Steps, loss, speed, and the held-out figures: accuracy with its 95% CI and calibration, or regression error."""
    ev = m.get("eval") or {}
    table = Table(title=title)
    rows: list[tuple[str, str]] = [
        ("steps", str(m.get("steps"))),
        ("train loss", fmt(m.get("train_loss"))),
        ("train time", f"{fmt(m.get('train_seconds'), '.0f')} s · {fmt(m.get('tokens_per_s'), '.0f')} tokens/s"),
    ]
    if "accuracy" in ev:
        ci = f"{ev['accuracy']:.4f} [{ev['accuracy_low']:.4f}, {ev['accuracy_high']:.4f}] (n={ev['n']})"
        rows += [
            ("eval accuracy (95% CI)", ci),
            ("temperature", fmt(ev.get("temperature"), ".3f")),
            ("NLL before → after", f"{fmt(ev.get('nll_before'))} → {fmt(ev.get('nll_after'))}"),
            ("ECE before → after", f"{fmt(ev.get('ece_before'))} → {fmt(ev.get('ece_after'))}"),
        ]
    elif "mse" in ev:
        rows += [
            ("eval MSE (95% CI)", f"{ev['mse']:.4f} [{ev['mse_low']:.4f}, {ev['mse_high']:.4f}] (n={ev['n']})"),
            ("eval MAE · Pearson r", f"{fmt(ev.get('mae'))} · {fmt(ev.get('pearson'))}"),
        ]
    rows += [("peak RSS MB", fmt(m.get("peak_rss_mb"), ".0f")), ("System", escape(str(system_path)))]
    table.add_column("")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def classify(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/classify-sst2-lora.yaml."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. training.max_steps=10."),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where new run directories are created."),
) -> None:
    """Train a classification/regression head from RECIPE.yaml; prints held-out accuracy, calibration, the System."""
    from tailorlm.train.heads import HeadRecipe, fit

    cfg = load_config(HeadRecipe, recipe, list(overrides or []))
    progress = training_progress()
    run = Run.create(cfg.name, root=runs_root, config=cfg, seed=cfg.training.seed, parent=cfg.model, kind="classify")
    with run, progress:
        fit(cfg, run, callbacks=[progress_callback(progress)])

    m = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    title = f"classify · {escape(cfg.problem)} · {escape(cfg.strategy.method)} · run {escape(run.id)}"
    console.print(_results_table(m, title, run.artifacts / "system.yaml"))
    console.print(
        f"use it: tailor eval {escape(str(run.artifacts))} --task TASK.yaml · "
        f"tailor generate --system {escape(str(run.artifacts))} 'some text'",
        highlight=False,
    )
