"""`tailor train sft`: fine-tune a model (any parameter strategy) from a YAML recipe; the result is a System."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import console
from tailorlm.cli._training import fmt, progress_callback, recipe_source, training_progress
from tailorlm.cli.train_align import dpo, reward, rl
from tailorlm.cli.train_heads import classify
from tailorlm.cli.train_pretrain import pretrain
from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.errors import ConfigError

app = typer.Typer(
    help="Train: SFT with any parameter strategy, classification heads, continued pretraining, reward models and "
    "preference optimization."
)
app.command("pretrain")(pretrain)  # continued pretraining on raw text: cli/train_pretrain.py
app.command("classify")(classify)  # classification/regression heads: cli/train_heads.py
app.command("reward")(reward)  # Bradley–Terry reward models: cli/train_align.py
app.command("dpo")(dpo)  # DPO, IPO, hinge, KTO, ORPO, SimPO: cli/train_align.py
app.command("rl")(rl)  # online RL, GRPO and RLOO: cli/train_align.py


@app.command("sft")
def sft(
    recipe: str = typer.Argument(None, help="Recipe YAML (optional with --resume: the run's config.yaml is used)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. training.max_steps=10."),
    resume: Path = typer.Option(None, "--resume", help="Run directory to continue from its latest checkpoint."),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where new run directories are created."),
    search: Path = typer.Option(None, "--search", help="SPACE.yaml: hyperparameter search with Optuna (pruning)."),
    trials: int = typer.Option(None, "--trials", min=1, help="--search: trials to finish (default 10)."),
    task: Path = typer.Option(None, "--task", help="--search: score trials by this task's metric, not eval loss."),
    train_from: Path = typer.Option(
        None, "--train-from", help="Train on this task.yaml's train: records, read as the ladder reads them."
    ),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="--search: keep trial checkpoints."),
    launcher: str = typer.Option(
        None, "--launcher", help="accelerate: run the recipe in N processes (DDP/FSDP/DeepSpeed)."
    ),
    num_processes: int = typer.Option(None, "--num-processes", min=1, help="--launcher: processes (default: GPUs)."),
    accelerate_config: Path = typer.Option(
        None, "--accelerate-config", help="--launcher: an accelerate config, e.g. recipes/accelerate/fsdp.yaml."
    ),
    cpu: bool = typer.Option(False, "--cpu", help="--launcher: train on the CPU (gloo) even when GPUs are visible."),
    run_dir: Path = typer.Option(None, "--run-dir", hidden=True, help="Internal: a worker of --launcher's run."),
) -> None:
    """Supervised fine-tuning from RECIPE.yaml; prints the table of results and the System's path."""
    from tailorlm.train.sft import SFTRecipe, fit

    source, overrides = recipe_source(recipe, overrides, resume, "recipes/sft-lora.yaml")
    if train_from is not None and resume is None:
        # The ladder's reader (train.fields, chat files, the input template) writes the rows the recipe trains on.
        from tailorlm.core.task import Task
        from tailorlm.ladder.training_data import write_sft_data

        train_task = Task.load(train_from)
        data = write_sft_data(train_task, runs_root / "data" / f"{train_task.name}-sft.jsonl")
        overrides = [*overrides, f"data.path={data.absolute()}", "data.format=openai"]
    from tailorlm.cli._search import is_search_run, search_command

    if search is not None or (resume is not None and is_search_run(resume)):
        search_command(
            None if resume is not None and source == resume / "config.yaml" else str(source),
            search,
            overrides,
            trials=trials,
            task=task,
            resume=resume,
            runs_root=runs_root,
            keep_checkpoints=keep_checkpoints,
        )
        return
    cfg = load_config(SFTRecipe, source, overrides)
    progress = training_progress()
    if run_dir is not None:
        # One process started by `--launcher accelerate`: train inside the launcher's run; rank 0 shows progress.
        from tailorlm.train.launch import process_rank, run_worker

        if process_rank() != 0:
            run_worker(cfg, run_dir, resume=resume is not None)
            return
        with progress:
            run_worker(cfg, run_dir, resume=resume is not None, callbacks=[progress_callback(progress)])
        return
    if launcher is not None:
        from tailorlm.train.launch import launch_sft

        if launcher != "accelerate":
            raise ConfigError(f"unknown launcher {launcher!r}", hint="--launcher accelerate")
        run = launch_sft(
            source,
            overrides,
            cfg,
            resume=resume,
            runs_root=runs_root,
            num_processes=num_processes,
            accelerate_config=accelerate_config,
            cpu=cpu,
        )
    else:
        if resume is not None:
            run = Run.reopen(resume)
        else:
            run = Run.create(
                cfg.name, root=runs_root, config=cfg, seed=cfg.training.seed, parent=cfg.system, kind="sft"
            )
        with run, progress:
            fit(cfg, run, resume=resume is not None, callbacks=[progress_callback(progress)])

    m = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    table = Table(title=f"sft · {escape(cfg.strategy.method)} · run {escape(run.id)}")
    for column in ("steps", "train loss", "eval loss", "tokens/s", "peak RSS MB", "System"):
        table.add_column(column, overflow="fold")
    table.add_row(
        str(m.get("steps")),
        fmt(m.get("train_loss")),
        fmt(m.get("eval_loss")),
        fmt(m.get("tokens_per_s"), ".1f"),
        fmt(m.get("peak_rss_mb"), ".0f"),
        escape(str(run.artifacts / "system.yaml")),
    )
    console.print(table)
    if c := m.get("canaries"):
        verdict = "[green]ok[/]" if c.get("promotable", True) else f"[red]forgetting: over max_drop {c['max_drop']}[/]"
        console.print(f"canaries {c['before']:.3f} → {c['after']:.3f} (drop {c['drop']:+.3f}) {verdict}")
    console.print(f"use it: tailor generate --system {escape(str(run.artifacts))} 'your question'", highlight=False)


def merge(
    system: Path = typer.Argument(..., help="A System folder or system.yaml with adapters."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the merged model and its system.yaml."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights dtype of the merged model."),
) -> None:
    """Fold a System's LoRA/IA3 adapters into the base weights: a plain HF model folder and a System using it."""
    from tailorlm.core.system import System
    from tailorlm.train.merge import merge_system

    merged = merge_system(System.load(system), out, dtype=dtype)
    console.print(
        f"merged → {escape(merged.model)}\nuse it: tailor generate --system {escape(str(out))} 'your question'"
    )
