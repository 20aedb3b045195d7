"""A Bradley–Terry reward model, top to bottom: pairs → backbone + scalar head (+ LoRA) → TRL RewardTrainer → System.

    recipe = load_config(RewardRecipe, "recipes/reward-lora.yaml", ["training.max_steps=10"])
    with Run.create("reward", config=recipe, seed=recipe.training.seed, kind="reward") as run:
        system = fit_reward(recipe, run)

The backbone is read as ``AutoModelForSequenceClassification`` with one output (the head engine's regression head):
the last token's hidden state → ``score`` → r(prompt, answer). The loss is -log σ(r_chosen - r_rejected)
(``losses.bradley_terry_loss``; TRL computes the same). The result is a System with a regression head, which
``scorer.RewardModelScorer`` loads for best-of-N, RL, ``tailor data pairs`` and the probes.

Held-out pairs are scored once at the end, pair by pair: the pairwise accuracy with a bootstrap CI next to chance
(0.5), the margins' distribution (a PNG), and the reward-length correlation, because a reward model that learned
"longer is better" scores well on some data and teaches RL to ramble.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tailorlm.core.io import atomic_directory
from tailorlm.core.run import Run
from tailorlm.core.system import AdapterSpec, HeadSpec, System
from tailorlm.train.align.config import RewardRecipe
from tailorlm.train.align.data import fit_rows, limited, load_preferences, split_rows, to_rows
from tailorlm.train.align.trainer_args import micro_batches, shared_arguments
from tailorlm.train.safety import guard_resources
from tailorlm.train.sft.recipe import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    MODEL_DIR,
    _restore_finished,
    _run_callback,
    _trained_to_the_end,
    latest_checkpoint,
)

log = logging.getLogger("tailorlm.train.align")

MARGINS_PNG = "margins.png"


def build_reward_trainer(recipe: RewardRecipe, run: Run, callbacks: Sequence[Any] = ()) -> tuple[Any, list[dict]]:
    """Everything up to ``trainer.train()``: the RewardTrainer and the held-out rows."""
    import datasets
    from transformers import PrinterCallback, set_seed
    from trl import RewardConfig, RewardTrainer

    from tailorlm.models.engines.head import head_tokenizer, load_head_model
    from tailorlm.models.load import resolve_model_path
    from tailorlm.train.heads.recipe import apply_strategy

    t = recipe.training
    data = load_preferences(recipe.data, seed=t.seed)
    run.record_dataset("pairs", recipe.data.path, data.fingerprint, len(data))
    held = load_preferences(recipe.eval_data, seed=t.seed) if recipe.eval_data else None
    train, held = split_rows(data, held, recipe.eval_fraction, t.seed)
    train = limited(train, recipe.data.limit, t.seed)
    path = resolve_model_path(recipe.model)
    tokenizer = head_tokenizer(path)
    train_rows, fit = fit_rows(to_rows(train), tokenizer, t.max_length, "training")
    held_rows = fit_rows(to_rows(held), tokenizer, t.max_length, "held-out")[0] if held is not None else []
    run.log_metrics({"train_pairs": len(train_rows), "held_out_pairs": len(held_rows), **fit.as_dict()}, step=0)

    set_seed(t.seed)  # the score head is initialised at random inside from_pretrained
    model = load_head_model(path, HeadSpec(problem="regression", max_length=t.max_length), tokenizer)
    model = apply_strategy(model, recipe.strategy)  # LoRA (SEQ_CLS: the score head trains whole) / full / freeze
    micro, accum = micro_batches(t.batch_size, t.micro_batch_size)
    args = RewardConfig(
        **shared_arguments(recipe, run, micro_batch=micro, grad_accum=accum),
        center_rewards_coefficient=recipe.center_rewards,
        dataset_num_proc=None,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_rows),
        processing_class=tokenizer,
        callbacks=[_run_callback(run), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)
    return trainer, held_rows


def score_rows(model: Any, tokenizer: Any, rows: Sequence[dict], batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of each row's chosen and rejected answers, as the trainer tokenized them (chat template, no cut)."""
    from tailorlm.train.align.scorer import reward_scores

    chosen = [[*r["prompt"], *r["chosen"]] for r in rows]
    rejected = [[*r["prompt"], *r["rejected"]] for r in rows]
    scores = reward_scores(model, tokenizer, chosen + rejected, batch_size=batch_size)
    return np.asarray(scores[: len(rows)]), np.asarray(scores[len(rows) :])


def pairwise_report(chosen: np.ndarray, rejected: np.ndarray, lengths: np.ndarray | None = None) -> dict[str, Any]:
    """Pairwise accuracy (ties count half) with a bootstrap CI, margin quantiles, and the reward-length correlation.

    ``lengths`` holds each scored answer's characters (chosen then rejected), to correlate with its reward.
    """
    from tailorlm.eval.stats import bootstrap_ci

    margins = chosen - rejected
    wins = np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0))
    ci = bootstrap_ci(wins, seed=0)
    report: dict[str, Any] = {
        "pairs": len(margins),
        "accuracy": ci["mean"],
        "ci_low": ci["low"],
        "ci_high": ci["high"],
        "chance": 0.5,
        "margin_mean": float(margins.mean()) if len(margins) else None,
        "margin_quantiles": {q: float(np.quantile(margins, q / 100)) for q in (5, 25, 50, 75, 95)}
        if len(margins)
        else {},
        "reward_mean": float(np.concatenate([chosen, rejected]).mean()) if len(margins) else None,
        "reward_std": float(np.concatenate([chosen, rejected]).std()) if len(margins) else None,
    }
    if lengths is not None and len(lengths) > 2:
        rewards = np.concatenate([chosen, rejected])
        report["reward_length_corr"] = float(np.corrcoef(rewards, lengths)[0, 1]) if rewards.std() > 0 else 0.0
    return report


def margins_png(margins: np.ndarray, accuracy: float, path: Any) -> None:
    """A histogram of r(chosen) - r(rejected) on the held-out pairs; the mass right of 0 is the accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(margins, bins=40, color="#4C72B0", alpha=0.85)
    ax.axvline(0, color="#C44E52", linewidth=1.5)
    ax.set_xlabel("r(chosen) − r(rejected) on held-out pairs")
    ax.set_ylabel("pairs")
    ax.set_title(f"reward margins: {accuracy:.1%} of pairs ranked right (chance 50%)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _pairs_seen(trainer: Any, start_step: int) -> int:
    a = trainer.args
    return (trainer.state.global_step - start_step) * a.per_device_train_batch_size * a.gradient_accumulation_steps


def fit_reward(recipe: RewardRecipe, run: Run, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> System:
    """Train per ``recipe`` inside ``run``; score the held-out pairs; save the System (a regression head)."""
    import torch

    trainer, held_rows = build_reward_trainer(recipe, run, callbacks)
    checkpoint = latest_checkpoint(run.path / CHECKPOINT_DIR) if resume else None
    start_step = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
    start = time.perf_counter()
    with guard_resources(run.path, recipe.training, "training (steps and checkpoints)"):
        if checkpoint is not None and _trained_to_the_end(checkpoint, trainer):
            # Killed in its final save: nothing is left to train, and the Trainer's resume loop would take one
            # more step before it checks max_steps (as in SFT's train_and_save).
            training_loss = _restore_finished(trainer, checkpoint)
        else:
            training_loss = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None).training_loss
    seconds = time.perf_counter() - start
    metrics: dict[str, Any] = {
        "method": recipe.strategy.method,
        "learning_rate": recipe.learning_rate,
        "train_loss": training_loss,
        "steps": trainer.state.global_step,
        "train_seconds": seconds,
        # Pairs seen this session (a resumed run counts its own steps only).
        "pairs_per_s": _pairs_seen(trainer, start_step) / seconds if seconds > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    model = trainer.model.eval()
    if held_rows:
        chosen, rejected = score_rows(model, trainer.processing_class, held_rows)
        lengths = np.asarray(
            [len(r["chosen"][-1]["content"]) for r in held_rows]
            + [len(r["rejected"][-1]["content"]) for r in held_rows]
        )
        metrics["held_out"] = pairwise_report(chosen, rejected, lengths)
        margins_png(chosen - rejected, metrics["held_out"]["accuracy"], run.path / MARGINS_PNG)
    run.write_metrics(metrics)

    # Weights into a temporary folder renamed when whole; system.yaml (atomic) last: a killed save never leaves a
    # complete-looking reward model.
    head = HeadSpec(problem="regression", max_length=recipe.training.max_length)
    with guard_resources(run.path, recipe.training, "saving the final artifacts"):
        if recipe.strategy.method in {"full", "freeze"}:
            out = run.artifacts / MODEL_DIR
            with atomic_directory(out) as tmp:
                trainer.save_model(str(tmp))
                trainer.processing_class.save_pretrained(tmp)
            system = System(model=str(out))
        else:
            out = run.artifacts / ADAPTER_DIR
            with atomic_directory(out) as tmp:
                model.save_pretrained(tmp)  # the adapter and the trained score layer (modules_to_save)
            system = System(model=recipe.model, adapters=[AdapterSpec(path=str(out), name=recipe.name)])
        system = system.model_copy(
            update={"name": recipe.name, "head": head, "parent": recipe.model, "created_by": run.id}
        )
        system.save(run.artifacts)
    if torch.cuda.is_available():
        metrics["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        run.write_metrics(metrics)
    run.logger.info("saved the reward model (%s) and system.yaml in %s", out.name, run.artifacts)
    return system
