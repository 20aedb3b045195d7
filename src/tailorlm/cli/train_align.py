"""`tailor train reward` and `tailor train dpo`: preference training from a YAML recipe; the result is a System."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import console
from tailorlm.cli._training import fmt, progress_callback, recipe_source, training_progress
from tailorlm.core.config import load_config
from tailorlm.core.run import Run


def _ci(block: dict[str, Any], key: str = "accuracy") -> str:
    if not block or block.get(key) is None:
        return "–"
    return f"{block[key]:.3f} [{block['ci_low']:.3f}, {block['ci_high']:.3f}] (n={block['pairs']})"


def _kl(kl: dict[str, Any] | None) -> str:
    if not kl:
        return "–"
    return f"{kl['kl_mean']:.3f} ± {fmt(kl.get('kl_std_error'), '.3f')} nats per answer (n={kl['samples']})"


def _open_run(cfg: Any, resume: Path | None, runs_root: Path, kind: str) -> Run:
    if resume is not None:
        return Run.reopen(resume)
    return Run.create(cfg.name, root=runs_root, config=cfg, seed=cfg.training.seed, kind=kind)


def reward(
    recipe: str = typer.Argument(None, help="Recipe YAML (optional with --resume: the run's config.yaml is used)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. training.max_steps=10."),
    resume: Path = typer.Option(None, "--resume", help="Run directory to continue from its latest checkpoint."),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where new run directories are created."),
) -> None:
    """Train a Bradley–Terry reward model on preference pairs; prints held-out pairwise accuracy with its CI."""
    from tailorlm.train.align.config import RewardRecipe
    from tailorlm.train.align.reward import MARGINS_PNG, fit_reward

    source, overrides = recipe_source(recipe, overrides, resume, "recipes/reward-lora.yaml")
    cfg = load_config(RewardRecipe, source, overrides)
    run = _open_run(cfg, resume, runs_root, "reward")
    progress = training_progress()
    with run, progress:
        fit_reward(cfg, run, resume=resume is not None, callbacks=[progress_callback(progress)])
    m = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    held = m.get("held_out") or {}
    table = Table(title=f"reward model · {escape(cfg.strategy.method)} · run {escape(run.id)}")
    table.add_column("")
    table.add_column("", overflow="fold")
    rows = [
        ("steps · train loss", f"{m.get('steps')} · {fmt(m.get('train_loss'))}"),
        ("train time", f"{fmt(m.get('train_seconds'), '.0f')} s · {fmt(m.get('pairs_per_s'), '.2f')} pairs/s"),
        ("held-out pairwise accuracy (95% CI)", f"{_ci(held)} · chance 0.500"),
        ("mean margin r(chosen) − r(rejected)", fmt(held.get("margin_mean"), ".3f")),
        ("reward ~ answer length (Pearson r)", fmt(held.get("reward_length_corr"), ".3f")),
        ("margins plot", escape(str(run.path / MARGINS_PNG)) if held else "–"),
        ("System", escape(str(run.artifacts / "system.yaml"))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def dpo(
    recipe: str = typer.Argument(None, help="Recipe YAML (optional with --resume: the run's config.yaml is used)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. method=ipo training.max_steps=10."),
    resume: Path = typer.Option(None, "--resume", help="Run directory to continue from its latest checkpoint."),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where new run directories are created."),
) -> None:
    """Preference optimization (DPO, IPO, hinge, KTO, ORPO, SimPO); prints held-out rankings before and after."""
    from tailorlm.train.align.config import DpoRecipe
    from tailorlm.train.align.dpo import fit_dpo

    source, overrides = recipe_source(recipe, overrides, resume, "recipes/dpo-lora.yaml")
    cfg = load_config(DpoRecipe, source, overrides)
    run = _open_run(cfg, resume, runs_root, "dpo")
    progress = training_progress()
    with run, progress:
        fit_dpo(cfg, run, resume=resume is not None, callbacks=[progress_callback(progress)])
    m = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    held = m.get("held_out") or {}

    def rate(key: str) -> str:
        r = held.get(key)
        return f"{r['rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else "–"

    table = Table(
        title=f"{escape(cfg.method)} · {escape(cfg.strategy.method)} · β {cfg.beta_value:g} · run {escape(run.id)}"
    )
    table.add_column("")
    table.add_column("", overflow="fold")
    rows = [
        ("steps · train loss", f"{m.get('steps')} · {fmt(m.get('train_loss'))}"),
        ("train time", f"{fmt(m.get('train_seconds'), '.0f')} s"),
        (
            f"held-out pairs ranked right by log-prob: start → trained (n={held.get('pairs', 0)})",
            f"{rate('reference_ranking')} → {rate('policy_ranking')}",
        ),
        ("implicit-reward accuracy (ties ½; 0.5 at the start)", rate("implicit_accuracy")),
        (
            "implicit reward margin · mean log π/π_ref",
            f"{fmt(held.get('implicit_margin_mean'))} · {fmt(held.get('mean_log_ratio'))}",
        ),
        ("KL(policy ‖ reference), sampled answers", _kl(m.get("kl"))),
        ("System", escape(str(run.artifacts / "system.yaml"))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if c := m.get("canaries"):
        verdict = "[green]ok[/]" if c.get("promotable", True) else f"[red]forgetting: over max_drop {c['max_drop']}[/]"
        console.print(f"canaries {c['before']:.3f} → {c['after']:.3f} (drop {c['drop']:+.3f}) {verdict}")


def _held_out_prompts(pairs: Path, eval_fraction: float, seed: int, limit: int | None) -> list[list[dict[str, str]]]:
    """The prompts of the held-out split a preference recipe with the same fraction and seed made."""
    from tailorlm.train.align.config import PreferenceData
    from tailorlm.train.align.data import load_preferences, split_rows, to_rows

    data = load_preferences(PreferenceData(path=str(pairs), skip_invalid=True), seed=seed)
    _, held = split_rows(data, None, eval_fraction, seed)
    rows = to_rows(held if held is not None else data)
    return [r["prompt"] for r in rows][:limit]


def _prompt_lines(path: Path) -> list[list[dict[str, str]]]:
    """``{"prompt": text or messages}`` per line (extra keys such as category are ignored); errors name file:line."""
    from tailorlm.errors import DataError

    prompts = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{i}: expected a JSON object with a 'prompt' ({err})") from err
        if isinstance(value, str) and value.strip():
            prompts.append([{"role": "user", "content": value}])
        elif isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
            prompts.append([{"role": m["role"], "content": m.get("content") or ""} for m in value])
        else:
            raise DataError(f"{path}:{i}: prompt must be non-empty text or a list of messages")
    return prompts


def winrate(
    policy: str = typer.Argument(..., help="The trained System (system.yaml or its folder)."),
    start: str = typer.Argument(..., help="The System it started from, or a model spec such as `default`."),
    reward_model: Path = typer.Option(..., "--reward-model", help="A reward model (`tailor train reward`)."),
    pairs: Path = typer.Option(None, "--pairs", help="Preference file: its held-out split's prompts are used."),
    prompts_file: Path = typer.Option(None, "--prompts", help="JSONL of {prompt: text or messages} instead."),
    eval_fraction: float = typer.Option(0.2, "--eval-fraction", help="--pairs: the recipe's eval_fraction."),
    seed: int = typer.Option(0, "--seed", help="--pairs: the recipe's training.seed; also the KL samples' seed."),
    limit: int = typer.Option(100, "--limit", min=1, help="Prompts compared."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """How often a reward model prefers POLICY's answer to START's on held-out prompts (with a CI), and the KL."""
    from tailorlm.cli._common import print_json
    from tailorlm.cli.eval import _system_from
    from tailorlm.errors import ConfigError
    from tailorlm.train.align.compare import compare_with_reward
    from tailorlm.train.align.scorer import RewardModelScorer

    if (pairs is None) == (prompts_file is None):
        raise ConfigError("give exactly one of --pairs and --prompts")
    if pairs is not None:
        prompts = _held_out_prompts(pairs, eval_fraction, seed, limit)
    else:
        prompts = _prompt_lines(prompts_file)[:limit]
    scorer = RewardModelScorer(reward_model)
    progress = training_progress()
    with progress:
        task = progress.add_task("answering", total=2 * len(prompts), loss="")
        report = compare_with_reward(
            _system_from(policy), _system_from(start), prompts, scorer.score, max_new_tokens=max_new_tokens,
            seed=seed, on_progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
    if as_json:
        print_json(report)
        return
    table = Table(title=f"{escape(policy)} vs {escape(start)} · judged by {escape(str(reward_model))}")
    table.add_column("")
    table.add_column("", overflow="fold")
    rows = [
        ("prompts · identical answers", f"{report['prompts']} · {report['identical_answers']}"),
        ("win rate, ties ½ (95% CI)", f"{report['win_rate']:.3f} [{report['ci_low']:.3f}, {report['ci_high']:.3f}]"),
        ("mean reward: policy · start", f"{report['reward_policy']:.3f} · {report['reward_start']:.3f}"),
        (
            "mean answer chars: policy · start",
            f"{report['answer_chars_policy']:.0f} · {report['answer_chars_start']:.0f}",
        ),
        ("KL(policy ‖ start), sampled answers", _kl(report.get("kl"))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def rl(
    recipe: str = typer.Argument(None, help="Recipe YAML (optional with --resume: the run's config.yaml is used)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. algorithm=rloo training.max_steps=10."),
    resume: Path = typer.Option(None, "--resume", help="Run directory to continue from its latest checkpoint."),
    runs_root: Path = typer.Option(Path("runs"), "--runs-root", help="Where new run directories are created."),
) -> None:
    """Online RL (GRPO, RLOO) against a verifiable reward, a reward model or a function; prints reward and KL."""
    from tailorlm.train.align.rl import CURVES_PNG, SAMPLES_MD, fit_rl
    from tailorlm.train.align.rl_config import RlRecipe

    source, overrides = recipe_source(recipe, overrides, resume, "recipes/rl-grpo.yaml")
    cfg = load_config(RlRecipe, source, overrides)
    run = _open_run(cfg, resume, runs_root, "rl")
    progress = training_progress()
    with run, progress:
        fit_rl(cfg, run, resume=resume is not None, callbacks=[progress_callback(progress)])
    m = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    table = Table(
        title=f"{escape(cfg.algorithm)} · {escape(cfg.strategy.method)} · G {cfg.group_size} · β {cfg.beta_value:g} · "
        f"reward {escape(cfg.reward.kind)} · run {escape(run.id)}"
    )
    table.add_column("")
    table.add_column("", overflow="fold")
    rows = [
        ("steps · train time", f"{m.get('steps')} · {fmt(m.get('train_seconds'), '.0f')} s"),
        ("mean reward: first step → last", f"{fmt(m.get('reward_first'))} → {fmt(m.get('reward_last'))}"),
        ("KL to the start, last step (per token)", fmt(m.get("kl_last"))),
        (
            "answer tokens: first step → last",
            f"{fmt(m.get('length_first'), '.1f')} → {fmt(m.get('length_last'), '.1f')}",
        ),
        ("curves (reward, KL, length)", escape(str(run.path / CURVES_PNG))),
        ("sampled answers (start, middle, end)", escape(str(run.path / SAMPLES_MD))),
        ("System", escape(str(run.artifacts / "system.yaml"))),
    ]
    if cfg.kl_target is not None:
        rows.insert(
            3, (f"β (adaptive, target KL {cfg.kl_target:g})", f"{cfg.beta_value:g} → {fmt(m.get('beta_final'))}")
        )
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if c := m.get("canaries"):
        verdict = "[green]ok[/]" if c.get("promotable", True) else f"[red]forgetting: over max_drop {c['max_drop']}[/]"
        console.print(f"canaries {c['before']:.3f} → {c['after']:.3f} (drop {c['drop']:+.3f}) {verdict}")
