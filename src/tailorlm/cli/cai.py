"""`tailor cai`: constitutional AI's supervised stage (answer → critique → revise), kept in a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tailorlm.cli._common import console, err_console, print_json
from tailorlm.core.run import Run, read_run
from tailorlm.errors import ConfigError, RunError

if TYPE_CHECKING:
    from tailorlm.train.align.cai import CaiConfig

SYSTEM_HELP = "The student: a system.yaml, a folder holding one, or a model (default, a HF folder, a hub id)."
ROLE_HELP = "System or model that writes the {what} (default: {default}); an endpoint: a system.yaml, engine: openai."

_FLAGS = {"max_new_tokens": "--max-tokens"}


def _config(resume: Path | None, given: dict[str, Any]) -> CaiConfig:
    """The run's config: from the options, or under --resume the config the run was started with."""
    from tailorlm.core.config import load_config
    from tailorlm.train.align.cai import CaiConfig

    if resume is None:
        if not given.get("system"):
            raise ConfigError("--system is required", hint="tailor cai --system default --limit 20")
        return CaiConfig.model_validate({k: v for k, v in given.items() if v is not None})
    if extra := sorted(k for k, v in given.items() if v is not None):
        flags = ", ".join(_FLAGS.get(k, "--" + k.replace("_", "-")) for k in extra)
        raise ConfigError(f"--resume continues the run as it was started; drop {flags}", hint="or start a new run")
    info = read_run(resume)
    if info.status == "corrupt":
        raise RunError(f"{resume}: not a readable run directory ({info.error})")
    if info.kind != "cai":
        raise RunError(f"{resume} is a {info.kind!r} run, not a cai run")
    if info.status == "running":
        raise RunError(f"{resume} is still running (pid {info.meta.get('pid')} on {info.meta.get('hostname')})")
    return load_config(CaiConfig, resume / "config.yaml")


def _local(spec: str | None) -> str | None:
    """A spec that is a local path, made absolute: ``--resume`` from another folder must find the same System."""
    return str(Path(spec).absolute()) if spec and Path(spec).exists() else spec


def _follow_up(summary: dict[str, Any], student: str) -> list[str]:
    """The two commands that train on what the run wrote: SFT on the revisions, DPO on revised ≻ original."""
    from tailorlm.core.system import SYSTEM_FILE

    path = Path(student)
    is_system = (path.is_file() and path.suffix in (".yaml", ".yml")) or (path / SYSTEM_FILE).is_file()
    start = f" system={path.absolute()}" if is_system else ("" if student == "default" else f" model={student}")
    files = summary["files"]
    out = []
    if summary["sft_records"]:
        out.append(f"tailor train sft recipes/sft-lora.yaml data.path={files['sft.jsonl']}{start}")
    if summary["pairs"]:
        out.append(f"tailor train dpo recipes/dpo-lora.yaml data.path={files['preference.jsonl']}{start}")
    return out


def cai(
    system: str = typer.Option(None, "--system", "-s", help=SYSTEM_HELP),
    constitution: Path = typer.Option(None, "--constitution", help="Principles YAML; default: the packaged one."),
    prompts: Path = typer.Option(
        None, "--prompts", help="JSONL with a `prompt` key, or .txt one per line; default: the red-team prompts."
    ),
    critic: str = typer.Option(None, "--critic", help=ROLE_HELP.format(what="critiques", default="the student")),
    reviser: str = typer.Option(None, "--reviser", help=ROLE_HELP.format(what="revisions", default="the critic")),
    limit: int = typer.Option(None, "--limit", min=1, help="Use the first N prompts."),
    rounds: int = typer.Option(None, "--rounds", min=1, max=8, help="Critique/revision rounds per prompt [1]."),
    seed: int = typer.Option(None, "--seed", help="Seeds the principle drawn per prompt and round [0]."),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Cap every generation; default: each System's."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Prompts per generate call and per save [8]."),
    reward_model: Path = typer.Option(
        None, "--reward-model", help="A `tailor train reward` run's artifacts: score the answers and revisions."
    ),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where new run directories are created."),
    resume: Path = typer.Option(None, "--resume", help="A cai run directory to continue with its prompts not done."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Constitutional AI: answer prompts, critique each answer against a principle, revise; write SFT and DPO data."""
    from tailorlm.train.align.cai import preflight, run_cai

    given = {
        "system": _local(system),
        "constitution": str(constitution.absolute()) if constitution else None,
        "prompts": str(prompts.absolute()) if prompts else None,
        "critic": _local(critic),
        "reviser": _local(reviser),
        "limit": limit,
        "rounds": rounds,
        "seed": seed,
        "max_new_tokens": max_tokens,
        "batch_size": batch_size,
        "reward_model": str(reward_model.absolute()) if reward_model else None,
    }
    cfg = _config(resume, given)
    if resume is not None:
        run = Run.reopen(resume)
    else:
        preflight(cfg)
        run = Run.create(cfg.name, root=runs_root, config=cfg, seed=cfg.seed, parent=cfg.system, kind="cai")
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task("cai", total=None)

    def show(done: int, total: int, stage: str) -> None:
        bar.update(task, completed=done, total=total, description=stage)

    try:
        with run, bar:
            summary = run_cai(cfg, run, on_progress=show)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; continue with: tailor cai --resume {escape(str(run.path))}", highlight=False)
        raise typer.Exit(130) from None
    commands = _follow_up(summary, cfg.system)
    if as_json:
        print_json({**summary, "run": str(run.path), "next": commands})
        return
    _print(summary, run, commands)


def _print(summary: dict[str, Any], run: Run, commands: list[str]) -> None:
    rate, ci = summary["changed_rate"], summary["changed_rate_ci95"]
    changed = f"{rate:.0%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "") if rate is not None else "–"
    skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary["skipped"].items() if v) or "none"
    table = Table(title=f"constitutional AI · run {escape(run.id)}")
    for column in ("prompts", "revised", "changed (95% CI)", "pairs written", "SFT records", "skipped"):
        table.add_column(column, overflow="fold")
    table.add_row(
        str(summary["prompts"]),
        str(summary["revised"]),
        changed,
        str(summary["pairs"]),
        str(summary["sft_records"]),
        escape(skipped),
    )
    console.print(table)
    reward = summary.get("reward")
    if reward and reward.get("n"):
        low, high = reward["revision_win_rate_ci95"]
        console.print(
            f"reward model on {reward['n']} answers: original {reward['answer_mean']:+.3f} → revision "
            f"{reward['revision_mean']:+.3f}; the revision scores higher {reward['revision_win_rate']:.0%} "
            f"[{low:.0%}, {high:.0%}] of the time"
        )
    paths = Table.grid(padding=(0, 2))
    for name, path in summary["files"].items():
        paths.add_row(name, escape(path))
    console.print(paths)
    if summary["generated_now"] == 0:
        console.print("[dim]every prompt was already done: nothing was generated[/]")
    if commands:
        console.print("train on it:")
        for command in commands:
            console.print(f"  {escape(command)}", highlight=False, soft_wrap=True)
