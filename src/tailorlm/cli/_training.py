"""What the training commands (`tailor train sft|pretrain|classify`) share: the Rich bar, its Trainer callback,
the recipe/--resume argument handling and number formatting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tailorlm.cli._common import err_console
from tailorlm.errors import ConfigError


def training_progress() -> Progress:
    """The bar every training command shows (steps, latest loss, elapsed, ETA); quiets datasets' and HF's own."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
    )


def progress_callback(progress: Progress) -> Any:
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


def recipe_source(
    recipe: str | None, overrides: list[str] | None, resume: Path | None, example: str
) -> tuple[Path, list[str]]:
    """The recipe file to read (the run's config.yaml under --resume) and the overrides.

    With --resume the recipe may be left out, and the first positional argument is then an override.
    """
    overrides = list(overrides or [])
    if recipe is not None and "=" in recipe and not Path(recipe).is_file():
        overrides.insert(0, recipe)
        recipe = None
    if recipe is None and resume is None:
        raise ConfigError("give a recipe YAML (or --resume RUN_DIR)", hint=f"see {example}")
    return (Path(recipe) if recipe else resume / "config.yaml"), overrides  # type: ignore[operator]


def fmt(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "–"
