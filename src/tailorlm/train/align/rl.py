"""Online RL, top to bottom: prompts (+ references) → reward → policy (+ LoRA) → TRL GRPO/RLOO → curves → System.

    recipe = load_config(RlRecipe, "recipes/rl-grpo.yaml", ["training.max_steps=10"])
    with Run.create("rl", config=recipe, seed=recipe.training.seed, kind="rl") as run:
        system = fit_rl(recipe, run)

Each step samples ``group_size`` answers to each of ``batch_size`` prompts, scores them, and pushes the policy
toward the answers that scored above their group (GRPO: (r − mean)/std of the group; RLOO: r minus the mean of the
other answers; ``rl_math.py`` has both, tested against TRL). A KL penalty to the starting policy (β) keeps it near
what it was; with LoRA the reference is the base with the adapter off, never a second copy.

The reward is one of:
- ``MetricReward``: the task's metric against the reference (a verifiable reward). The answer is cut at the task's
  stop strings and read out of the completion as the eval harness reads it, so the reward is the eval's score;
- ``RewardModelReward``: a ``tailor train reward`` model's score of prompt + answer;
- ``PythonReward``: ``fn(prompts, completions, references) -> list[float]`` from a module or a file.

What the run keeps besides the System: every step's reward, KL, entropy and answer length in ``metrics.jsonl`` (as
TRL logs them) and ``rl-curves.png``; a few rollouts of every step in ``samples.jsonl`` and, from the start, middle
and end of training, in ``samples.md``. A policy that games its reward (answers that grow, repeat, or match the
metric without answering) shows there before it shows in a score.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tailorlm.core.io import append_text, atomic_write_text
from tailorlm.core.run import Run
from tailorlm.core.system import PromptSpec, System
from tailorlm.errors import ConfigError, DataError
from tailorlm.train.align.rl_config import RlRecipe
from tailorlm.train.align.rl_math import AdaptiveKLController
from tailorlm.train.align.trainer_args import micro_batches, shared_arguments

log = logging.getLogger("tailorlm.train.align")

CURVES_PNG = "rl-curves.png"
SAMPLES_JSONL = "samples.jsonl"
SAMPLES_MD = "samples.md"
SMOOTHING = 5  # steps in the reward curve's trailing mean
DEFAULT_COMPLETION_TOKENS = 128  # a prompts file without a task: room for a short paragraph

# --- rewards --------------------------------------------------------------------------------------------------------
# Each reward is called by TRL as fn(prompts=..., completions=..., <dataset columns>, trainer_state=..., ...): the
# prompts are message lists and the completions [{"role": "assistant", "content": text}] (conversational rows).


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or the content of a conversational completion's messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if isinstance(m, Mapping))


def _answers(completions: Sequence[Any], stop: Sequence[str]) -> list[str]:
    from tailorlm.models.engines.base import truncate_at_stop

    return [truncate_at_stop(completion_text(c), stop)[0] for c in completions]


def _references(references: Sequence[Any] | None, n: int) -> list[list[str]]:
    if references is None:
        return [[] for _ in range(n)]
    return [[str(r) for r in refs if str(r).strip()] if refs else [] for refs in references]


def _scores(values: Sequence[float]) -> list[float | None]:
    # None tells TRL "could not score": it leaves the answer out of the group's baseline instead of counting a 0.
    return [None if v is None or math.isnan(v) else float(v) for v in values]


class MetricReward:
    """The metric against each prompt's references: 1.0 for a right label, SQuAD F1 for a QA answer (a verifiable
    reward). Reads the answer as the eval harness does: cut at ``stop``, then the prompt program's extraction."""

    def __init__(self, metric: str, prompt: PromptSpec | None = None, stop: Sequence[str] = ()) -> None:
        from tailorlm.data.pairs import MetricScorer

        self.scorer = MetricScorer(metric, prompt)  # tailor data pairs' scorer: the same reading of an answer
        self.stop = list(stop)
        self.__name__ = f"metric_{metric}"  # TRL logs rewards/<name>/mean

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], references: Sequence[Any] | None = None, **_: Any
    ) -> list[float | None]:
        answers = _answers(completions, self.stop)
        refs = _references(references, len(answers))
        scores = [math.nan] * len(answers)
        # A prompt without a reference cannot be scored by a metric that needs one: None, not a silent 0.
        ok = [i for i, r in enumerate(refs) if r or not self.scorer.needs_reference]
        if ok:
            got = self.scorer.score([prompts[i] for i in ok], [answers[i] for i in ok], [refs[i] or None for i in ok])
            for i, s in zip(ok, got, strict=True):
                scores[i] = s
        return _scores(scores)


class RewardModelReward:
    """A reward model's r(prompt, answer) (``tailor train reward``), tokenized exactly as in its training."""

    def __init__(self, path: str | Path, stop: Sequence[str] = ()) -> None:
        from tailorlm.train.align.scorer import RewardModelScorer

        self.scorer = RewardModelScorer(path)
        self.stop = list(stop)
        self.__name__ = "reward_model"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float | None]:
        return _scores(self.scorer.score([list(p) for p in prompts], _answers(completions, self.stop)))


def load_function(spec: str) -> Callable[..., Any]:
    """``module:function`` (importable) or ``path/to/file.py:function``; a clear error for either kind of miss."""
    module, _, name = spec.rpartition(":")
    if not module or not name:
        raise ConfigError(f"reward function {spec!r} is not module:function", hint='e.g. "my_rewards:exact"')
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise ConfigError(f"reward function file {path} does not exist")
        loader_spec = importlib.util.spec_from_file_location(f"tailorlm_reward_{path.stem}", path)
        assert loader_spec is not None and loader_spec.loader is not None
        mod = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise ConfigError(f"cannot import {module!r} for the reward function: {err}") from err
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ConfigError(f"{module} has no function {name!r}")
    return fn  # type: ignore[no-any-return]


class PythonReward:
    """``fn(prompts, completions, references) -> list[float]``: prompts as message lists, completions as text (cut
    at ``stop``), references as lists of strings (empty when a prompt has none)."""

    def __init__(self, function: str | Callable[..., Any], stop: Sequence[str] = ()) -> None:
        self.fn = load_function(function) if isinstance(function, str) else function
        self.stop = list(stop)
        self.__name__ = getattr(self.fn, "__name__", "python")

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], references: Sequence[Any] | None = None, **_: Any
    ) -> list[float | None]:
        answers = _answers(completions, self.stop)
        out = list(self.fn([list(p) for p in prompts], answers, _references(references, len(answers))))
        if len(out) != len(answers):
            raise DataError(f"reward function {self.__name__} returned {len(out)} scores for {len(answers)} answers")
        return _scores([math.nan if v is None else float(v) for v in out])


class SampleRecorder:
    """Wraps a reward: its first ``per_step`` scored rollouts of every step go to ``samples.jsonl`` (appended, so a
    resumed run keeps what it had; ``samples_markdown`` keeps the latest copy of a step)."""

    def __init__(self, reward: Callable[..., list[float | None]], path: Path, per_step: int, stop: Sequence[str]):
        self.reward, self.path, self.per_step, self.stop = reward, path, per_step, list(stop)
        self.__name__ = getattr(reward, "__name__", "reward")

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        scores = self.reward(prompts, completions, **kwargs)
        state = kwargs.get("trainer_state")
        step = state.global_step + 1 if state is not None else 0  # TRL scores a step's rollouts before taking it
        refs = _references(kwargs.get("references"), len(scores))
        answers = _answers(completions, self.stop)
        batch = uuid.uuid4().hex[:12]  # one call's rows: a step a resumed run takes again is a later batch
        rows = [
            {"step": step, "batch": batch, "prompt": _last_user(prompts[i]), "reference": refs[i],
             "answer": answers[i], "reward": scores[i]}
            for i in range(min(self.per_step, len(scores)))
        ]  # fmt: skip
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        append_text(self.path, "".join(line + "\n" for line in lines))
        return scores


def _last_user(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return str(users[-1] if users else "")


Reward = MetricReward | RewardModelReward | PythonReward


def make_reward(recipe: RlRecipe, *, task: Any, prompt: PromptSpec | None) -> Reward:
    """The recipe's reward function, cutting answers at ``reward.stop`` (else the task's stop strings)."""
    spec = recipe.reward
    stop = spec.stop if spec.stop is not None else (task.generation.stop if task is not None else [])
    if spec.kind == "metric":
        return MetricReward(spec.metric or task.primary, prompt, stop)
    if spec.kind == "reward_model":
        assert spec.reward_model is not None
        return RewardModelReward(spec.reward_model, stop)
    assert spec.function is not None
    return PythonReward(spec.function, stop)


# --- data -----------------------------------------------------------------------------------------------------------


def load_rl_prompts(recipe: RlRecipe, system: System, run: Run | None = None) -> tuple[list[dict[str, Any]], Any]:
    """TRL rows ``{"prompt": messages, "references": [...]}`` from the recipe's task or prompts file (rendered
    through the System's prompt program, as at inference), and the task (None for a prompts file)."""
    import random

    from tailorlm.data.pairs import load_prompts

    source = recipe.task or recipe.prompts
    assert source is not None
    loaded = load_prompts(source, system, skip_invalid=recipe.skip_invalid and recipe.prompts is not None)
    if loaded.issues:
        log.warning("%s: %d malformed record(s) left out (skip_invalid)", source, len(loaded.issues))
    if run is not None:
        import hashlib

        digest = hashlib.sha256(json.dumps([i.messages for i in loaded.items], sort_keys=True).encode()).hexdigest()
        run.record_dataset("prompts", source, digest, len(loaded.items))
    rows = [
        {"prompt": [{"role": m["role"], "content": m.get("content") or ""} for m in item.messages],
         "references": list(item.references or [])}
        for item in loaded.items
    ]  # fmt: skip
    if recipe.reward.kind == "metric":
        kept = [r for r in rows if r["references"]]
        if not kept:
            raise DataError(
                f"{source}: no prompt has a reference answer, and the metric reward scores answers against one",
                hint="map the answer column (train.fields: {reference: COLUMN}), or use a reward model",
            )
        if len(kept) < len(rows):
            log.warning("%d of %d prompts have no reference and are left out", len(rows) - len(kept), len(rows))
        rows = kept
    if recipe.limit is not None and recipe.limit < len(rows):
        rows = random.Random(recipe.training.seed).sample(rows, recipe.limit)
    return rows, loaded.task


def _fitting_prompts(rows: list[dict[str, Any]], tokenizer: Any, budget: int) -> list[dict[str, Any]]:
    """The rows whose prompt (with the generation prompt) leaves room for the completion within max_length."""
    kept = []
    for row in rows:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        if len(ids["input_ids"] if hasattr(ids, "keys") else ids) <= budget:
            kept.append(row)
    if not kept:
        raise ConfigError(
            f"every prompt is longer than {budget} tokens (training.max_length − max_completion_length)",
            hint="raise training.max_length",
        )
    if len(kept) < len(rows):
        log.warning("%d of %d prompts exceed %d tokens and are left out", len(rows) - len(kept), len(rows), budget)
    return kept


# --- trainer --------------------------------------------------------------------------------------------------------


def completion_tokens(recipe: RlRecipe, task: Any) -> int:
    if recipe.max_completion_length is not None:
        return recipe.max_completion_length
    return task.generation.max_new_tokens if task is not None else DEFAULT_COMPLETION_TOKENS


def _config(recipe: RlRecipe, run: Run, micro: int, accum: int, max_new: int) -> Any:
    shared = shared_arguments(recipe, run, micro_batch=micro, grad_accum=accum)
    shared.pop("max_length")  # GRPO/RLOO take the completion's length; prompts were filtered to fit
    # TRL counts prompt + completion tokens into state.num_input_tokens_seen itself (what the ladder's plan reads);
    # the Trainer's own counter looks for input_ids in a batch of raw rows and only warns at every step.
    shared["include_num_input_tokens_seen"] = "no"
    common = dict(
        **shared,
        num_generations=recipe.group_size,
        max_completion_length=max_new,
        temperature=recipe.temperature,
        beta=recipe.beta_value,
        # Dropout makes the policy's log-probs differ from the rollout's and the reference's by noise alone.
        disable_dropout=True,
        log_completions=False,  # samples.jsonl keeps them (TRL's would print tables to the console)
    )
    if recipe.algorithm == "grpo":
        from trl import GRPOConfig

        return GRPOConfig(**common, loss_type=recipe.loss_type, scale_rewards=recipe.scale_rewards)
    from trl import RLOOConfig

    return RLOOConfig(**common)


def _kl_callback(trainer: Any, recipe: RlRecipe, run: Run) -> Any:
    """After every logged step, move ``trainer.beta`` (read by TRL's loss, GRPO, and reward, RLOO) toward
    ``kl_target`` with the adaptive controller; a resumed run starts from the β it last logged."""
    from transformers import TrainerCallback

    controller = AdaptiveKLController(recipe.beta_value, recipe.kl_target or 1.0, recipe.kl_horizon)

    class AdaptiveKL(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step and (beta := _last_logged(run.path, "beta", state.global_step)) is not None:
                controller.kl_coef = beta
                trainer.beta = beta

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            kl = (logs or {}).get("kl")
            if isinstance(kl, int | float) and math.isfinite(kl):
                samples = getattr(trainer, "completions_per_step", None) or (
                    args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
                )
                trainer.beta = controller.update(float(kl), samples)
                run.log_metrics({"beta": trainer.beta}, step=state.global_step)

    return AdaptiveKL()


def _last_logged(run_dir: Path, key: str, upto: int) -> float | None:
    value = None
    for row in _metric_rows(run_dir):
        if key in row and int(row.get("step") or 0) <= upto:
            value = float(row[key])
    return value


def _ppo_trainer(
    recipe: RlRecipe, run: Run, model: Any, tokenizer: Any, peft_cfg: Any, rows: list[dict[str, Any]],
    reward: Any, max_new: int, callbacks: Sequence[Any],
) -> Any:  # fmt: skip
    """Our PPO trainer (``ppo.py``): a batch is ``batch_size`` prompts, each optimizer step one clipped update."""
    import datasets
    from transformers import PrinterCallback, TrainingArguments

    from tailorlm.train.align.ppo import PpoTrainer
    from tailorlm.train.sft.recipe import _run_callback

    if peft_cfg is None and hasattr(model, "peft_config"):
        raise ConfigError(
            "ppo starts a new LoRA adapter; continuing a System's adapter needs its frozen copy as the reference",
            hint="algorithm: grpo continues a System's adapter, or give model: instead of system:",
        )
    if len(rows) < recipe.training.batch_size:
        raise ConfigError(
            f"ppo samples a rollout of training.batch_size={recipe.training.batch_size} prompts, "
            f"but only {len(rows)} are usable",
            hint="lower training.batch_size or give more prompts",
        )
    if peft_cfg is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_cfg)
    shared = shared_arguments(recipe, run, micro_batch=recipe.training.batch_size, grad_accum=1)
    shared.pop("max_length")
    shared["include_num_input_tokens_seen"] = "no"  # the trainer counts each rollout's tokens itself
    trainer = PpoTrainer(
        model=model,
        args=TrainingArguments(**shared),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        reward=reward,
        group_size=recipe.group_size,
        max_new_tokens=max_new,
        temperature=recipe.temperature,
        beta=recipe.beta_value,
        ppo=recipe.ppo,
        callbacks=[_run_callback(run), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def build_rl_trainer(
    recipe: RlRecipe, run: Run, callbacks: Sequence[Any] = (), *, use_cpu_head: bool | None = None
) -> tuple[Any, System | None, str, PromptSpec | None]:
    """Everything up to ``trainer.train()``: (trainer, base System, model spec, the System's prompt program)."""
    import datasets
    from transformers import PrinterCallback

    from tailorlm.train.align.dpo import _policy
    from tailorlm.train.sft.recipe import _run_callback

    base = System.load(recipe.system) if recipe.system else None
    start = base if base is not None else System(model=recipe.model)
    rows, task = load_rl_prompts(recipe, start, run)
    reward = make_reward(recipe, task=task, prompt=start.prompt)
    # DPO's loader: the seed (the adapter's init), a continued System adapter, or freeze's trainable blocks.
    model, tokenizer, base, spec, peft_cfg = _policy(recipe)  # type: ignore[arg-type]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_new = completion_tokens(recipe, task)
    rows = _fitting_prompts(rows, tokenizer, recipe.training.max_length - max_new)
    run.log_metrics({"prompts": len(rows), "max_completion_length": max_new}, step=0)
    t = recipe.training
    micro, accum = micro_batches(t.batch_size * recipe.group_size, t.micro_batch_size)
    recorder = SampleRecorder(reward, run.path / SAMPLES_JSONL, recipe.samples_per_step, reward.stop)
    if recipe.algorithm == "ppo":
        trainer = _ppo_trainer(recipe, run, model, tokenizer, peft_cfg, rows, recorder, max_new, callbacks)
        if recipe.kl_target is not None:
            trainer.add_callback(_kl_callback(trainer, recipe, run))
        return trainer, base, spec, start.prompt
    kwargs: dict[str, Any] = dict(
        model=model,
        reward_funcs=[recorder],
        args=_config(recipe, run, micro, accum, max_new),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[_run_callback(run), *callbacks],
    )
    if peft_cfg is not None:
        kwargs["peft_config"] = peft_cfg
    if recipe.algorithm == "grpo":
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOTrainer as Trainer
    from tailorlm.train.align.cpu_head import cpu_lm_head
    from tailorlm.train.align.rollouts import with_merged_rollouts

    with cpu_lm_head(enabled=use_cpu_head):  # on a CPU TRL's fused head scores every position: ours the answers'
        trainer = with_merged_rollouts(Trainer)(**kwargs)
    trainer.remove_callback(PrinterCallback)
    if recipe.kl_target is not None:
        trainer.add_callback(_kl_callback(trainer, recipe, run))
    return trainer, base, spec, start.prompt


# --- report: curves and samples -------------------------------------------------------------------------------------


def _metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    return rows


def rl_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per-step series from metrics.jsonl: reward, reward_std, kl, entropy, length, beta (the last value logged
    for a step wins, so steps a resumed run took again count once)."""
    keys = {"reward": "reward", "reward_std": "reward_std", "kl": "kl", "entropy": "entropy",
            "length": "completions/mean_length", "beta": "beta"}  # fmt: skip
    series: dict[str, dict[int, float]] = {k: {} for k in keys}
    for row in _metric_rows(run_dir):
        step = int(row.get("step") or 0)
        for name, key in keys.items():
            value = row.get(key)
            if step > 0 and isinstance(value, int | float) and math.isfinite(value):
                series[name][step] = float(value)
    return series


def curves_png(series: Mapping[str, Mapping[int, float]], path: Path, title: str) -> None:
    """Reward (± its std over the step's answers), KL to the reference (and β when adaptive), and answer length."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 7), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True)
    reward = series.get("reward", {})
    steps = sorted(reward)
    if steps:
        mean = np.array([reward[s] for s in steps])
        std = np.array([series.get("reward_std", {}).get(s, 0.0) for s in steps])
        axes[0].plot(steps, mean, color="#4C72B0", marker="o", markersize=3, alpha=0.6, label="step")
        axes[0].fill_between(steps, mean - std, mean + std, color="#4C72B0", alpha=0.15)
        if len(steps) >= 2 * SMOOTHING:
            # A step's mean is of a few answers: the trailing mean over SMOOTHING steps shows the trend.
            trend = np.convolve(mean, np.ones(SMOOTHING) / SMOOTHING, mode="valid")
            axes[0].plot(steps[SMOOTHING - 1 :], trend, color="#1F3A68", linewidth=2, label=f"mean of {SMOOTHING}")
            axes[0].legend(loc="best", fontsize=8)
    axes[0].set_ylabel("reward")
    kl = series.get("kl", {})
    axes[1].plot(sorted(kl), [kl[s] for s in sorted(kl)], color="#C44E52", marker="o", markersize=3)
    axes[1].set_ylabel("KL to start / token")  # GRPO logs the k3 estimate, RLOO k1
    beta = series.get("beta", {})
    if beta:
        twin = axes[1].twinx()
        twin.plot(sorted(beta), [beta[s] for s in sorted(beta)], color="#8172B2", linestyle="--")
        twin.set_ylabel("β", color="#8172B2")
    length = series.get("length", {})
    axes[2].plot(sorted(length), [length[s] for s in sorted(length)], color="#55A868", marker="o", markersize=3)
    axes[2].set_ylabel("answer tokens")
    axes[2].set_xlabel("step")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _cell(text: Any, limit: int = 400, *, tail: bool = False) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, cut to ``limit`` characters (keeping the end for a
    prompt, whose question usually follows a shared instruction)."""
    text = str(text if text is not None else "")
    if len(text) > limit:
        text = "…" + text[-limit:] if tail else text[:limit] + "…"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", " ⏎ ") or "(empty)"


def samples_markdown(samples: Path, out: Path) -> list[int]:
    """``samples.md``: the rollouts of the first, middle and last recorded steps, each with its mean reward and
    answer length; returns the steps shown. The latest copy of a step wins (a resumed run repeats some)."""
    batches: dict[str, list[dict[str, Any]]] = {}
    if samples.is_file():
        for line in samples.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            batches.setdefault(str(row.get("batch")), []).append(row)
    steps = {int(rows[0].get("step") or 0): rows for rows in batches.values()}  # in file order: the latest wins
    order = sorted(steps)
    chosen = sorted({order[0], order[len(order) // 2], order[-1]}) if order else []
    labels = {order[0]: "start", order[len(order) // 2]: "middle", order[-1]: "end"} if order else {}
    lines = [
        "# Sampled answers during training",
        "",
        "Rollouts the policy wrote at the start, middle and end of training, with the reward each got. Read them for "
        "reward hacking: answers that grow, repeat, or satisfy the reward without answering the question.",
    ]
    for step in chosen:
        rows = steps[step]
        rewards = [r["reward"] for r in rows if isinstance(r.get("reward"), int | float)]
        mean = f"{sum(rewards) / len(rewards):.3f}" if rewards else "–"
        chars = sum(len(r.get("answer") or "") for r in rows) / max(len(rows), 1)
        lines += ["", f"## Step {step} ({labels[step]}) · mean reward {mean} · answers {chars:.0f} characters", ""]
        lines += ["| prompt | reference | answer | reward |", "|---|---|---|---|"]
        previous = None
        for r in rows:
            reward = f"{r['reward']:.3f}" if isinstance(r.get("reward"), int | float) else "–"
            refs = " / ".join(r.get("reference") or []) or "–"
            # A group's answers share their prompt: it is shown once.
            prompt = "〃" if r.get("prompt") == previous else _cell(r.get("prompt"), 200, tail=True)
            previous = r.get("prompt")
            lines.append(f"| {prompt} | {_cell(refs, 80)} | {_cell(r.get('answer'))} | {reward} |")
    if not chosen:
        lines += ["", "No rollouts were recorded."]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return chosen


def _first_last(series: Mapping[int, float]) -> tuple[float | None, float | None]:
    if not series:
        return None, None
    steps = sorted(series)
    return series[steps[0]], series[steps[-1]]


# --- the recipe -----------------------------------------------------------------------------------------------------


def fit_rl(recipe: RlRecipe, run: Run, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> System:
    """Train per ``recipe`` inside ``run``; write the curves and samples; save the adapter (or model) and
    system.yaml."""
    from tailorlm.train.sft.recipe import train_and_save

    trainer, base, spec, prompt = build_rl_trainer(recipe, run, callbacks)

    def evaluate(tr: Any) -> dict[str, Any]:
        if "ref" in getattr(tr.model, "peft_config", {}):
            tr.model.delete_adapter("ref")  # the frozen copy of a continued adapter is not part of the result
        series = rl_curves(run.path)
        title = f"{recipe.algorithm.upper()} · G={recipe.group_size} · β {recipe.beta_value:g}"
        curves_png(series, run.path / CURVES_PNG, title)
        shown = samples_markdown(run.path / SAMPLES_JSONL, run.path / SAMPLES_MD)
        reward_first, reward_last = _first_last(series["reward"])
        length_first, length_last = _first_last(series["length"])
        return {
            "algorithm": recipe.algorithm,
            "group_size": recipe.group_size,
            "beta": recipe.beta_value,
            "beta_final": float(getattr(tr, "beta", recipe.beta_value)),
            "kl_target": recipe.kl_target,
            "reward_first": reward_first,
            "reward_last": reward_last,
            "kl_last": _first_last(series["kl"])[1],
            "entropy_last": _first_last(series["entropy"])[1],
            "length_first": length_first,
            "length_last": length_last,
            "curves": str(run.path / CURVES_PNG),
            "samples": str(run.path / SAMPLES_MD),
            "sample_steps": shown,
        }

    # SFT's: resume from the latest checkpoint, metrics.json, the adapter, system.yaml, canaries, model card.
    return train_and_save(
        recipe, run, trainer, base=base, model_spec=spec, prompt=prompt, resume=resume, evaluate=evaluate
    )
