"""`tailor train sft RECIPE --search SPACE --trials N`: the CLI side of ``tailorlm.train.search`` (progress, table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tailorlm.cli._common import console, err_console

STATE_STYLE = {"complete": "green", "pruned": "yellow", "fail": "red", "running": "cyan", "waiting": "dim"}


def _trial_progress(progress: Progress, number: int) -> Any:
    """A TrainerCallback showing one trial's steps; its bar is removed when the trial ends (pruned or not)."""
    from transformers import TrainerCallback

    class TrialBar(TrainerCallback):
        task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.task = progress.add_task(f"trial {number}", total=state.max_steps, loss="")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            value = (logs or {}).get("eval_loss")
            if isinstance(value, int | float) and self.task is not None:
                progress.update(self.task, loss=f"eval_loss {value:.4f}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.task is not None:
                progress.remove_task(self.task)
                self.task = None  # fit's final evaluate() logs after training ends

    return TrialBar()


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return json.dumps(v) if isinstance(v, list | dict) else str(v)


def trials_table(result: Any) -> Table:
    """Params, score, state and time of every trial; the best one starred."""
    params = list(dict.fromkeys(k for r in result.trials for k in r.params))
    arrow = "↓" if result.direction == "minimize" else "↑"
    table = Table(title=f"search · {len(result.trials)} trials · run {escape(result.run.id)}")
    # Columns are named by the last key of each path (learning_rate, r) when that is unambiguous: narrower.
    leaves = [p.rpartition(".")[2] for p in params]
    names = leaves if len(set(leaves)) == len(leaves) else params
    for column in ("#", "state", f"{result.metric} {arrow}"):
        table.add_column(escape(column), no_wrap=True)
    for name in names:
        table.add_column(escape(name), overflow="fold")
    table.add_column("time s", no_wrap=True)
    best = result.best.number if result.best else None
    for r in result.trials:
        score = f"{r.score:.4f}" if r.score is not None else "–"
        state = r.state + (f" @{r.pruned_at_step}" if r.pruned_at_step is not None else "")
        table.add_row(
            f"{r.number}{' ★' if r.number == best else ''}",
            f"[{STATE_STYLE.get(r.state, 'white')}]{state}[/]",
            score,
            *(escape(_value(r.params.get(p, "–"))) for p in params),
            f"{r.seconds:.1f}" if r.seconds is not None else "–",
        )
    return table


def search_command(
    recipe: str | None,
    space: Path | None,
    overrides: list[str],
    *,
    trials: int | None,
    task: Path | None,
    resume: Path | None,
    runs_root: Path,
    keep_checkpoints: bool,
) -> None:
    """Run or resume a search, then print the trials table and the best System's path."""
    import datasets
    from transformers.utils import logging as hf_logging

    from tailorlm.train.search import search

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=err_console,
    )

    def on_trial(row: Any) -> None:
        score = f"{row.score:.4f}" if row.score is not None else "–"
        progress.console.print(f"trial {row.number}: {row.state} {score} {escape(_value(row.params))}")

    with progress:
        result = search(
            recipe,
            space,
            overrides=overrides,
            n_trials=trials,
            runs_root=runs_root,
            resume=resume,
            task=task,
            keep_checkpoints=keep_checkpoints,
            callbacks=lambda n: [_trial_progress(progress, n)],
            on_trial=on_trial,
        )
    console.print(trials_table(result))
    console.print(f"trials: {escape(str(result.run.path / 'trials.csv'))}", highlight=False)
    if result.best_system is not None:
        console.print(f"best System: {escape(str(result.best_system))}", highlight=False)
        console.print(
            f"use it: tailor generate --system {escape(str(result.best_system.parent))} 'your question'",
            highlight=False,
        )
    else:
        console.print("[yellow]no trial completed: no best System[/]")


def is_search_run(path: Path) -> bool:
    """A search run directory holds the Optuna study."""
    from tailorlm.train.search import STUDY_DB

    return (Path(path) / STUDY_DB).is_file()
