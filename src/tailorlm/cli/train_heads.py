"""`tailor train classify`: a classification or regression head on the LM backbone; the result is a System."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tailorlm.cli._common import console, err_console
from tailorlm.core.config import load_config
from tailorlm.core.run import Run


def _progress_callback(progress: Progress) -> Any:
    """A TrainerCallback that moves a Rich bar: steps done of max_steps, the latest loss, and the ETA."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.task = progress.add_task("training", total=state.max_steps, completed=state.global_step, loss="")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            logs = logs or {}
            shown = [f"{k} {logs[k]:.4f}" for k in ("loss", "eval_loss") if isinstance(logs.get(k), int | float)]
            if shown and self.task is not None:
                progress.update(self.task, loss=" · ".join(shown))

    return RichProgress()


def _fmt(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "–"


def _results_table(m: dict[str, Any], title: str, system_path: Path) -> Table:
    """Steps, loss, speed, and the held-out figures: accuracy with its 95% CI and calibration, or regression error."""
    ev = m.get("eval") or {}
    table = Table(title=title)
    rows: list[tuple[str, str]] = [
        ("steps", str(m.get("steps"))),
        ("train loss", _fmt(m.get("train_loss"))),
        ("train time", f"{_fmt(m.get('train_seconds'), '.0f')} s · {_fmt(m.get('tokens_per_s'), '.0f')} tokens/s"),
    ]
    if "accuracy" in ev:
        ci = f"{ev['accuracy']:.4f} [{ev['accuracy_low']:.4f}, {ev['accuracy_high']:.4f}] (n={ev['n']})"
        rows += [
            ("eval accuracy (95% CI)", ci),
            ("temperature", _fmt(ev.get("temperature"), ".3f")),
            ("NLL before → after", f"{_fmt(ev.get('nll_before'))} → {_fmt(ev.get('nll_after'))}"),
            ("ECE before → after", f"{_fmt(ev.get('ece_before'))} → {_fmt(ev.get('ece_after'))}"),
        ]
    elif "mse" in ev:
        rows += [
            ("eval MSE (95% CI)", f"{ev['mse']:.4f} [{ev['mse_low']:.4f}, {ev['mse_high']:.4f}] (n={ev['n']})"),
            ("eval MAE · Pearson r", f"{_fmt(ev.get('mae'))} · {_fmt(ev.get('pearson'))}"),
        ]
    rows += [("peak RSS MB", _fmt(m.get("peak_rss_mb"), ".0f")), ("System", escape(str(system_path)))]
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
    import datasets
    from transformers.utils import logging as hf_logging

    from tailorlm.train.heads import HeadRecipe, fit

    cfg = load_config(HeadRecipe, recipe, list(overrides or []))
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
    run = Run.create(cfg.name, root=runs_root, config=cfg, seed=cfg.training.seed, parent=cfg.model, kind="classify")
    with run, progress:
        fit(cfg, run, callbacks=[_progress_callback(progress)])

    m = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    title = f"classify · {escape(cfg.problem)} · {escape(cfg.strategy.method)} · run {escape(run.id)}"
    console.print(_results_table(m, title, run.artifacts / "system.yaml"))
    console.print(
        f"use it: tailor eval {escape(str(run.artifacts))} --task TASK.yaml · "
        f"tailor generate --system {escape(str(run.artifacts))} 'some text'",
        highlight=False,
    )
