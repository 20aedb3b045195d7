"""The alignment rungs (docs/alignment.md), registered like any later technique.

**dpo** (a task with ``preference:`` pairs): LoRA preference optimization of the base model on the task's pairs
(``ladder.dpo.method``: DPO by default; IPO, hinge, ORPO, SimPO), the reference being the base with the adapter off.
It must beat the LoRA SFT rung (or, when that did not run, the rungs below it) on the task's own metric: preference
data teaches what people prefer, which only pays on the ladder if the eval set rewards it.

**rl** (a task with ``train:`` records whose primary metric scores an answer against its reference): GRPO (or RLOO)
with LoRA from the base model, the reward being that metric on the model's own sampled answers (a verifiable
reward). It must beat zero-shot: it learns from the same records as SFT but only from what the model already says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailorlm.core.run import Run
from tailorlm.core.task import Task, TrainingCanarySpec
from tailorlm.ladder.rungs import Built, Rung, register_rung

if TYPE_CHECKING:
    from tailorlm.ladder.context import LadderContext


def _train_resumably(ctx: LadderContext, out: Path, recipe: Any, data: Path, kind: str, fit: Any) -> tuple[Run, Any]:
    """Run ``fit(recipe, run)`` in ``out/runs``, resuming the run a killed ladder left for this recipe and data
    (the pointer and fingerprint ``LadderContext.train`` uses for SFT)."""
    from tailorlm.core.io import atomic_write_json
    from tailorlm.ladder.context import TRAINING_POINTER, _fingerprint, _no_display, _resumable

    fingerprint = _fingerprint(recipe, data)
    resume_dir = _resumable(out / TRAINING_POINTER, fingerprint)
    ctx.release_engine()  # training loads its own copy of the model
    if resume_dir is not None:
        run = Run.reopen(resume_dir)
    else:
        run = Run.create(recipe.name, root=out / "runs", config=recipe, seed=ctx.task.seed, kind=kind)
        atomic_write_json(out / TRAINING_POINTER, {"run": str(run.path), "fingerprint": fingerprint})
    display = ctx.training_display or _no_display
    with run, display() as callbacks:
        system = fit(recipe, run, resume=resume_dir is not None, callbacks=callbacks)
    return run, system


class Dpo(Rung):
    name = "dpo"
    title = "DPO on preference pairs (LoRA)"
    family = "alignment"
    uses = frozenset({"preference"})
    config_keys = ("dpo",)
    below = "lora"
    trains = True
    training_config = "dpo"

    def skip_reason(self, task: Task) -> str | None:
        return None if task.preference is not None else "the task has no preference pairs (preference:)"

    def prepare(self, ctx: LadderContext) -> list[Any]:
        return self.training_records(ctx)

    def training_records(self, ctx: LadderContext) -> list[dict[str, Any]]:
        """The task's pairs as TRL rows (``train/align/data.py``): a seeded sample of ``max_records``."""
        if self.name not in ctx.records:
            from tailorlm.train.align.data import limited, load_preferences, to_rows

            spec = self._data(ctx)
            pairs = limited(load_preferences(spec, seed=ctx.task.seed), spec.limit, ctx.task.seed)
            ctx.records[self.name] = to_rows(pairs)
        return ctx.records[self.name]

    def _data(self, ctx: LadderContext) -> Any:
        from tailorlm.train.align.config import PreferenceData

        spec = ctx.task.preference
        assert spec is not None
        fmt = spec.format if spec.format in {"preference", "hh"} else None
        limits = [n for n in (spec.limit, ctx.config.dpo.max_records) if n is not None]
        return PreferenceData(path=str(ctx.task.resolve(spec.path)), format=fmt, limit=min(limits, default=None))

    def write_training_data(self, records: list[dict[str, Any]], path: Path) -> Path:
        from tailorlm.core.io import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return path

    def recipe(self, ctx: LadderContext, data: Path, *, max_steps: int | None = None) -> Any:
        """The rung's DPO recipe on ``data`` (``max_steps`` and no canaries: the plan's calibration run)."""
        from tailorlm.train.align.config import DpoRecipe, DpoTraining, PreferenceData

        cfg = ctx.config.dpo
        steps = max_steps or cfg.max_steps
        return DpoRecipe(
            name=f"ladder-{self.name}", model=ctx.model, method=cfg.method, beta=cfg.beta,
            data=PreferenceData(path=str(data), format="preference"),
            eval_fraction=0.0,  # the ladder's eval set judges the result
            training=DpoTraining(
                epochs=cfg.epochs, max_steps=steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                max_length=cfg.max_length, seed=ctx.task.seed, memory_limit_gb=ctx.task.budgets.memory_gb,
                save_steps=max(1, steps // 4) if steps else 25,
            ),
            canaries=TrainingCanarySpec(
                enabled=max_steps is None, limit=ctx.config.canary_limit, max_drop=ctx.task.canaries.max_drop
            ),
        )  # fmt: skip

    def calibration_trainer(self, ctx: LadderContext, data: Path, steps: int, run: Any, callbacks: list[Any]) -> Any:
        from tailorlm.train.align.dpo import build_dpo_trainer

        return build_dpo_trainer(self.recipe(ctx, data, max_steps=steps), run, callbacks)[0]

    def count_tokens(self, ctx: LadderContext, records: list[dict[str, Any]]) -> int:
        """Tokens one epoch processes: each pair's prompt with its chosen and with its rejected answer."""
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(ctx.model)
        texts = [
            tokenizer.apply_chat_template([*r["prompt"], *side], tokenize=False)
            for r in records
            for side in (r["chosen"], r["rejected"])
        ]
        return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])

    def build(self, ctx: LadderContext, out: Path) -> Built:
        from tailorlm.train.align.dpo import fit_dpo

        data = self.write_training_data(self.training_records(ctx), out / "pairs.jsonl")
        recipe = self.recipe(ctx, data)
        run, system = _train_resumably(ctx, out, recipe, data, "dpo", fit_dpo)
        metrics = json.loads((run.path / "metrics.json").read_text())
        held = metrics.get("held_out") or {}
        notes = [f"{recipe.method}, β {recipe.beta_value:g}: {metrics.get('steps')} steps, "
                 f"train loss {metrics.get('train_loss', float('nan')):.3f}"]  # fmt: skip
        if ranking := held.get("policy_ranking"):
            notes.append(f"pairs ranked right by log-prob {ranking['rate']:.2f}")
        return Built(
            system.model_copy(update={"name": self.name}),
            tokens=int(metrics.get("tokens") or 0),
            runs=[str(run.path)],
            canaries=metrics.get("canaries"),
            detail={"training": float(metrics.get("train_seconds") or 0.0)},
            artifacts=[run.artifacts],
            notes=notes,
        )


register_rung(Dpo())


class Rl(Rung):
    name = "rl"
    title = "online RL on the task's metric (LoRA)"
    family = "alignment"
    uses = frozenset({"train"})
    config_keys = ("rl",)
    below = "zero-shot"
    trains = True
    training_config = "rl"

    def skip_reason(self, task: Task) -> str | None:
        from tailorlm.eval.metrics import get_metric

        if (why := super().skip_reason(task)) is not None:
            return why
        if not get_metric(task.primary).needs_reference:
            # Tool and JSON checks read per-example metadata, not a reference: no verifiable reward to train on.
            return f"the primary metric ({task.primary}) does not score an answer against a reference"
        return None

    def prepare(self, ctx: LadderContext) -> list[Any]:
        return self.training_records(ctx)

    def training_records(self, ctx: LadderContext) -> list[dict[str, Any]]:
        """Eval-style records ``{"input", "reference"}``: the input as the eval set shows it (the task's template),
        and every reference, so the reward credits any acceptable answer. A seeded sample of ``max_records``."""
        if self.name not in ctx.records:
            from tailorlm.ladder.rungs import sample_records
            from tailorlm.ladder.training_data import references, with_references

            examples = with_references(ctx.train_examples(), "the rl rung", ctx.train_path())
            examples = sample_records(examples, ctx.config.rl.max_records, ctx.task.seed)
            ctx.records[self.name] = [{"input": ex.text, "reference": references(ex)} for ex in examples]
        return ctx.records[self.name]

    def write_training_data(self, records: list[dict[str, Any]], path: Path) -> Path:
        from tailorlm.core.io import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return path

    def _completion_tokens(self, ctx: LadderContext) -> int:
        return ctx.config.rl.max_completion_length or ctx.task.generation.max_new_tokens

    def recipe(self, ctx: LadderContext, data: Path, *, max_steps: int | None = None) -> Any:
        """The rung's RL recipe on ``data`` (``max_steps`` and no canaries: the plan's calibration run). The reward
        is the task's primary metric on answers cut at its stop strings: the score the eval will give."""
        from tailorlm.train.align.rl_config import RewardSpec, RlRecipe, RlTraining

        cfg = ctx.config.rl
        steps = max_steps or cfg.max_steps
        return RlRecipe(
            name=f"ladder-{self.name}", model=ctx.model, algorithm=cfg.algorithm, prompts=str(data),
            reward=RewardSpec(kind="metric", metric=ctx.task.primary, stop=list(ctx.task.generation.stop)),
            group_size=cfg.group_size, beta=cfg.beta, max_completion_length=self._completion_tokens(ctx),
            training=RlTraining(
                epochs=cfg.epochs, max_steps=steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                max_length=cfg.max_length, seed=ctx.task.seed, memory_limit_gb=ctx.task.budgets.memory_gb,
                save_steps=max(1, steps // 4) if steps else 25,
            ),
            canaries=TrainingCanarySpec(
                enabled=max_steps is None, limit=ctx.config.canary_limit, max_drop=ctx.task.canaries.max_drop
            ),
        )  # fmt: skip

    def calibration_trainer(self, ctx: LadderContext, data: Path, steps: int, run: Any, callbacks: list[Any]) -> Any:
        from tailorlm.train.align.rl import build_rl_trainer

        return build_rl_trainer(self.recipe(ctx, data, max_steps=steps), run, callbacks)[0]

    def count_tokens(self, ctx: LadderContext, records: list[dict[str, Any]]) -> int:
        """Tokens one epoch processes, as TRL counts them: each prompt and each of its group_size answers, which
        are priced at max_completion_length (sampled answers often run to it; shorter ones make the run faster)."""
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(ctx.model)
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": r["input"]}], tokenize=False,
                                          add_generation_prompt=True)
            for r in records
        ]  # fmt: skip
        prompt_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        return ctx.config.rl.group_size * (prompt_tokens + len(records) * self._completion_tokens(ctx))

    def build(self, ctx: LadderContext, out: Path) -> Built:
        from tailorlm.train.align.rl import fit_rl

        data = self.write_training_data(self.training_records(ctx), out / "prompts.jsonl")
        recipe = self.recipe(ctx, data)
        run, system = _train_resumably(ctx, out, recipe, data, "rl", fit_rl)
        m = json.loads((run.path / "metrics.json").read_text())

        def num(key: str) -> str:
            return f"{m[key]:.3f}" if isinstance(m.get(key), int | float) else "–"

        notes = [f"{recipe.algorithm}, G {recipe.group_size}, β {recipe.beta_value:g}: {m.get('steps')} steps; "
                 f"mean {ctx.task.primary} reward {num('reward_first')} → {num('reward_last')}, KL {num('kl_last')}",
                 f"curves: {m.get('curves')}; sampled answers: {m.get('samples')}"]  # fmt: skip
        return Built(
            system.model_copy(update={"name": self.name}),
            tokens=int(m.get("tokens") or 0),
            runs=[str(run.path)],
            canaries=m.get("canaries"),
            detail={"training": float(m.get("train_seconds") or 0.0)},
            artifacts=[run.artifacts],
            notes=notes,
        )


register_rung(Rl())
