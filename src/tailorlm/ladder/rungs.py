"""The rungs: each turns (task, base model) into a System, as a Technique does, and says what it needs.

A rung declares the data it reads (``uses``), the ladder settings it reads (``config_keys``: both go into its cache
key), the rung it must beat to pay for itself (``below``), and when it does not apply (``skip_reason``). Later
techniques (preference optimization, distillation, tool use) join with ``register_rung``; nothing else in the
ladder names a rung.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tailorlm.core.system import AnswerExtraction, FewShotExample, FewShotSelection, PromptSpec, RetrieverSpec, System
from tailorlm.core.task import Task
from tailorlm.errors import ConfigError, DataError
from tailorlm.ladder.training_data import raft_queries, sft_rows, with_references
from tailorlm.models.engines.base import GenerationParams

if TYPE_CHECKING:
    from tailorlm.ladder.context import LadderContext


@dataclass
class Built:
    """What a rung's build produced, besides the System."""

    system: System
    tokens: int = 0  # tokens processed while building (training, prompt search)
    runs: list[str] = field(default_factory=list)  # the runs that built it (training, search)
    canaries: dict[str, Any] | None = None  # set by rungs that change the weights
    detail: dict[str, float] = field(default_factory=dict)  # seconds per part
    # Seconds of shared work the System depends on (the index), built once for every rung that uses it: each such
    # rung's build time counts it in full, wherever it happened to be built.
    shared_s: float = 0.0
    artifacts: list[Path] = field(default_factory=list)  # what the System needs on disk (for its size)
    notes: list[str] = field(default_factory=list)


class Rung:
    """One step of the ladder. Subclasses set the class attributes and implement ``build``."""

    name: ClassVar[str]
    title: ClassVar[str]
    family: ClassVar[str]  # prompting, rag, fine-tuning, …
    uses: ClassVar[frozenset[str]] = frozenset()  # train, documents, preference
    config_keys: ClassVar[tuple[str, ...]] = ()  # LadderConfig fields the rung reads
    below: ClassVar[str | None] = None  # the rung it has to beat
    trains: ClassVar[bool] = False  # changes the weights (canaries, compute budgets)
    training_config: ClassVar[str] = "sft"  # the LadderConfig block with a training rung's steps and batch size

    def skip_reason(self, task: Task) -> str | None:
        """Why the rung does not apply to ``task`` (None: it applies)."""
        if "train" in self.uses and task.train is None:
            return "the task has no training data (train:)"
        if "documents" in self.uses and task.documents is None:
            return "the task has no documents (documents:)"
        return None

    def build(self, ctx: LadderContext, out: Path) -> Built:
        raise NotImplementedError

    def prepare(self, ctx: LadderContext) -> list[Any]:
        """The rung's data, built from the task's training records without a model: demonstrations, SFT rows,
        RAFT questions, head rows ([] for a rung that reads none). ``build`` uses it, and the preflight calls it to
        prove the rung can run: a ``DataError`` (with the column to map or the field to add) means it cannot."""
        return []

    def training_records(self, ctx: LadderContext) -> list[dict[str, Any]]:
        """Chat records a training rung trains on (the plan times a few steps on them)."""
        raise NotImplementedError

    def write_training_data(self, records: list[dict[str, Any]], path: Path) -> Path:
        """``records`` as the file its trainer reads: chat records (and their provenance sidecar) by default."""
        from tailorlm.rag.sft_data import write_jsonl

        return write_jsonl(records, path)

    def eval_task(self, task: Task) -> Task:
        """The task as this rung is scored on it: the same examples and metrics (decoding may differ)."""
        return task

    def calibration_trainer(self, ctx: LadderContext, data: Path, steps: int, run: Any, callbacks: list[Any]) -> Any:
        """A Trainer for ``steps`` optimizer steps of this rung's own recipe on ``data`` (the plan times it)."""
        from tailorlm.train.sft.recipe import build_trainer

        trainer, *_ = build_trainer(ctx.sft_recipe(self.name, data, max_steps=steps), run, callbacks)
        return trainer

    def count_tokens(self, ctx: LadderContext, records: list[dict[str, Any]]) -> int:
        """Tokens one epoch over ``records`` processes (chat records through the model's chat template)."""
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(ctx.model)
        texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in records]
        return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


RUNGS: dict[str, Rung] = {}


def register_rung(rung: Rung) -> Rung:
    """Add a rung to the ladder, after those already registered (the ladder's order is registration order)."""
    RUNGS[rung.name] = rung
    return rung


# --- prompting -------------------------------------------------------------------------------------------------


def demonstrations(ctx: LadderContext, limit: int) -> list[FewShotExample]:
    """Training records as demonstrations: the input as the eval set shows it (the task's template), and the first
    reference as the answer. A seeded sample, so the pool does not depend on the file's order."""
    examples = with_references(ctx.train_examples(), "few-shot", ctx.train_path())
    rng = random.Random(ctx.task.seed)
    chosen = rng.sample(examples, min(limit, len(examples)))
    return [FewShotExample(input=ex.text, output=first_reference(ex.reference)) for ex in chosen]


def first_reference(reference: Any) -> str:
    if isinstance(reference, list):
        return str(reference[0]) if reference else ""
    return str(reference)


def few_shot_prompt(ctx: LadderContext) -> PromptSpec:
    cfg = ctx.config.few_shot
    pool = demonstrations(ctx, cfg.pool)
    return PromptSpec(few_shot=pool, selection=FewShotSelection(strategy=cfg.selection, k=cfg.k, seed=ctx.task.seed))


class ZeroShot(Rung):
    name = "zero-shot"
    title = "zero-shot"
    family = "prompting"

    def build(self, ctx: LadderContext, out: Path) -> Built:
        return Built(System(name=self.name, model=ctx.model))


class FewShot(Rung):
    name = "few-shot"
    title = "few-shot"
    family = "prompting"
    uses = frozenset({"train"})
    config_keys = ("few_shot",)
    below = "zero-shot"

    def prepare(self, ctx: LadderContext) -> list[Any]:
        return demonstrations(ctx, ctx.config.few_shot.pool)

    def build(self, ctx: LadderContext, out: Path) -> Built:
        return Built(System(name=self.name, model=ctx.model, prompt=few_shot_prompt(ctx)))


_NUMBER = re.compile(r"^\s*-?[\d,]*\.?\d+\s*$")


def is_reasoning_task(task: Task, references: list[Any]) -> bool:
    """Chain-of-thought pays on multi-step problems; we read that from numeric answers (GSM8K-like) or from the
    task's own declaration of ``extract`` in its metrics (math metrics)."""
    if any(m in ("math_accuracy", "numeric_match") for m in task.metrics):
        return True
    firsts = [first_reference(r) for r in references if r]
    return bool(firsts) and sum(bool(_NUMBER.match(r)) for r in firsts) >= 0.6 * len(firsts)


class ChainOfThought(Rung):
    name = "chain-of-thought"
    title = "chain-of-thought"
    family = "prompting"
    config_keys = ("chain_of_thought",)
    below = "zero-shot"

    def eval_task(self, task: Task) -> Task:
        # Room to reason, and no stop at the first newline: the chain spans lines.
        cfg = task.ladder.chain_of_thought
        generation = task.generation.model_copy(update={"max_new_tokens": cfg.max_new_tokens, "stop": []})
        return task.model_copy(update={"generation": generation})

    heuristic = True  # applies by a guess from the data: naming it in `rungs` runs it anyway

    def skip_reason(self, task: Task) -> str | None:
        from tailorlm.errors import TailorError
        from tailorlm.eval.examples import build_examples

        try:
            examples, _ = build_examples(task, 50)
        except TailorError:
            return None  # the preflight reports what is wrong with the eval set, with file, line and field
        if not is_reasoning_task(task, [ex.reference for ex in examples]):
            return "not a reasoning task: the references are not numbers (set ladder.rungs to force it)"
        return None

    def build(self, ctx: LadderContext, out: Path) -> Built:
        cfg = ctx.config.chain_of_thought
        prompt = PromptSpec(chain_of_thought=cfg.trigger, answer=AnswerExtraction(method="last_number"))
        # The System carries its own room to reason, so `tailor chat` on best/ decodes as the ladder scored it.
        system = System(name=self.name, model=ctx.model, prompt=prompt,
                        generation=GenerationParams(max_new_tokens=cfg.max_new_tokens))  # fmt: skip
        return Built(system, notes=[f"reasoning chains up to {cfg.max_new_tokens} tokens"])


class OptimizedPrompt(Rung):
    name = "optimized-prompt"
    title = "optimized prompt"
    family = "prompting"
    uses = frozenset({"train"})
    config_keys = ("optimize",)
    below = "few-shot"

    def prepare(self, ctx: LadderContext) -> list[Any]:
        """The training records the search reads (pool, dev and test), which must have references."""
        cfg = ctx.config.optimize
        examples = with_references(ctx.train_examples(), "the prompt search", ctx.train_path())
        n, need = len(examples), cfg.pool_size + cfg.dev_size + 1
        if n < need:
            raise ConfigError(
                f"the optimized-prompt rung needs at least {need} training records with a reference "
                f"(ladder.optimize.pool_size {cfg.pool_size} + dev_size {cfg.dev_size} + 1 to test on); the task "
                f"has {n}",
                hint="lower ladder.optimize.pool_size and dev_size, or add training records",
            )
        return examples[: cfg.pool_size + 2 * cfg.dev_size]

    def build(self, ctx: LadderContext, out: Path) -> Built:
        from tailorlm.prompting.optimize import OptimizeConfig, optimize_prompt

        cfg = ctx.config.optimize
        # The search ranks candidates on training records only: the eval set stays untouched for the comparison.
        # It reads them as every rung does (train.fields, chat files), not by loading train: as an eval set.
        examples = self.prepare(ctx)
        search_task = ctx.task.model_copy(update={"eval": ctx.task.train})
        result = optimize_prompt(
            System(name=self.name, model=ctx.model),
            search_task,
            OptimizeConfig(budget=cfg.budget, k=cfg.k, pool_size=cfg.pool_size, dev_size=cfg.dev_size,
                           test_size=cfg.dev_size, seed=ctx.task.seed, batch_size=ctx.config.batch_size),
            root=out / "runs",
            progress=ctx.progress,
            examples=examples,
        )  # fmt: skip
        tokens = 0
        for path in (out / "runs").rglob("metrics.json"):
            cost = json.loads(path.read_text()).get("cost") or {}
            tokens += int(cost.get("prompt_tokens") or 0) + int(cost.get("completion_tokens") or 0)
        system = result.best.model_copy(update={"name": self.name})
        return Built(system, tokens=tokens, runs=[str(result.run.path)],
                     notes=[f"search: dev {result.dev['start']:.3f} → {result.dev['best']:.3f}"])  # fmt: skip


# --- retrieval -------------------------------------------------------------------------------------------------


def retriever(ctx: LadderContext) -> tuple[RetrieverSpec, Built]:
    index = ctx.index()
    spec = RetrieverSpec(index=str(index.location), top_k=ctx.config.rag.top_k, mode=ctx.config.rag.mode)
    built = Built(System(), detail={"index": index.seconds}, shared_s=index.seconds, artifacts=[index.location])
    tuned = ctx.dir / "index-tune.json"
    if ctx.config.rag.tune and tuned.is_file():
        t = json.loads(tuned.read_text())
        k, best = t["k"], t["best"]
        settings = ", ".join(f"{a}={b}" for a, b in best["settings"].items()) or "default settings"
        built.notes.append(
            f"retrieval tuned on {t['questions']} training questions: recall@{k} {t['default'][f'recall@{k}']:.2f} "
            f"→ {best[f'recall@{k}']:.2f} (chunks {best['chunking']}, {settings})"
        )
    return spec, built


class Rag(Rung):
    name = "rag"
    title = "RAG"
    family = "rag"
    uses = frozenset({"documents"})
    config_keys = ("rag",)
    below = "zero-shot"

    def build(self, ctx: LadderContext, out: Path) -> Built:
        spec, built = retriever(ctx)
        built.system = System(name=self.name, model=ctx.model, retriever=spec)
        return built


class RagFewShot(Rung):
    name = "rag-few-shot"
    title = "RAG + few-shot"
    family = "rag"
    uses = frozenset({"documents", "train"})
    config_keys = ("rag", "few_shot")
    below = "rag"

    def prepare(self, ctx: LadderContext) -> list[Any]:
        return demonstrations(ctx, ctx.config.few_shot.pool)

    def build(self, ctx: LadderContext, out: Path) -> Built:
        spec, built = retriever(ctx)
        built.system = System(name=self.name, model=ctx.model, retriever=spec, prompt=few_shot_prompt(ctx))
        return built


# --- fine-tuning -----------------------------------------------------------------------------------------------


def sample_records(records: list[Any], limit: int | None, seed: int) -> list[Any]:
    if limit is None or limit >= len(records):
        return list(records)
    return random.Random(seed).sample(records, limit)


def chat_records(ctx: LadderContext) -> list[dict[str, Any]]:
    """Training records as chat turns: the input as the eval set shows it, answered with the first reference."""
    examples = with_references(ctx.train_examples(), "LoRA SFT", ctx.train_path())
    return sft_rows(sample_records(examples, ctx.config.sft.max_records, ctx.task.seed))


class Lora(Rung):
    name = "lora"
    title = "LoRA SFT"
    family = "fine-tuning"
    uses = frozenset({"train"})
    config_keys = ("sft",)
    below = "few-shot"
    trains = True

    def prepare(self, ctx: LadderContext) -> list[Any]:
        return self.training_records(ctx)

    def training_records(self, ctx: LadderContext) -> list[dict[str, Any]]:
        if self.name not in ctx.records:
            ctx.records[self.name] = chat_records(ctx)
        return ctx.records[self.name]

    def build(self, ctx: LadderContext, out: Path) -> Built:
        built = ctx.train(self.name, self.training_records(ctx), out)
        built.system = built.system.model_copy(update={"name": self.name})
        return built


class RagLora(Rung):
    name = "rag-lora"
    title = "RAG + LoRA (RAFT)"
    family = "fine-tuning"
    uses = frozenset({"documents", "train"})
    config_keys = ("rag", "sft", "raft")
    below = "rag"
    trains = True

    def prepare(self, ctx: LadderContext) -> list[Any]:
        """The RAFT questions (no retrieval: that needs the embedder): see ``raft_queries``."""
        return raft_queries(ctx.train_examples(), ctx.train_path())

    def training_records(self, ctx: LadderContext) -> list[dict[str, Any]]:
        """RAFT records (Zhang et al. 2024): each training question with its gold passage among retrieved
        distractors (or distractors only), shown exactly as the RAG System shows sources at inference."""
        from tailorlm.rag.index import Index
        from tailorlm.rag.sft_data import make_sft_records

        if self.name in ctx.records:
            return ctx.records[self.name]
        spec, _ = retriever(ctx)
        # The questions as every rung reads training records: through train.fields, chat files included.
        queries = self.prepare(ctx)
        limit = ctx.config.sft.max_records
        if limit is not None:
            # Retrieval per question is the cost here: draw a margin over the limit for questions whose gold
            # passage is not retrieved, instead of retrieving for every training question.
            queries = sample_records(queries, 2 * limit, ctx.task.seed)
        idx = Index.open(str(spec.index))
        try:
            records, counts = make_sft_records(
                idx.retriever(), queries, spec=spec, distractors=ctx.config.raft.distractors,
                p_oracle=ctx.config.raft.p_oracle, seed=ctx.task.seed, render=_question_renderer(ctx),
            )  # fmt: skip
        finally:
            idx.close()
        if not records:
            raise DataError(f"no RAFT records: no training question had a retrievable gold passage ({counts})")
        ctx.records[self.name] = sample_records(records, limit, ctx.task.seed)
        ctx.records[f"{self.name}/counts"] = [counts]  # for the note: how the gold passages were found
        return ctx.records[self.name]

    def build(self, ctx: LadderContext, out: Path) -> Built:
        spec, built = retriever(ctx)
        records = self.training_records(ctx)
        trained = ctx.train(self.name, records, out)
        system = trained.system.model_copy(update={"name": self.name, "retriever": spec})
        with_gold = sum(1 for r in records if r.get("metadata", {}).get("oracle"))
        note = f"{len(records)} RAFT records, {with_gold} with the gold passage among the sources"
        if counts := ctx.records.get(f"{self.name}/counts"):
            from tailorlm.rag.sft_data import gold_summary

            note += f"; {gold_summary(counts[0])}"
        return Built(
            system, tokens=trained.tokens, runs=trained.runs, canaries=trained.canaries,
            detail={**built.detail, **trained.detail}, shared_s=built.shared_s,
            artifacts=[*built.artifacts, *trained.artifacts], notes=[note, *trained.notes],
        )  # fmt: skip


# Metrics that score a label; a task scored with them and with few distinct references is a classification task.
LABEL_METRICS = frozenset({"accuracy", "macro_f1", "micro_f1"})
MAX_LABELS = 50


class Head(Rung):
    """A classification head on the backbone (``tailor train classify``): answers are labels, read from one
    forward pass, so it is fast to serve and cannot answer off the label set."""

    name = "head"
    title = "classification head (LoRA)"
    family = "fine-tuning"
    uses = frozenset({"train"})
    config_keys = ("head",)
    below = "few-shot"
    trains = True
    training_config = "head"

    def skip_reason(self, task: Task) -> str | None:
        if (why := super().skip_reason(task)) is not None:
            return why
        if not LABEL_METRICS & set(task.metrics):
            return "not a classification task: no accuracy/macro_f1/micro_f1 metric"
        return None

    def labels(self, ctx: LadderContext) -> list[str]:
        examples = with_references(ctx.train_examples(), "a classification head", ctx.train_path())
        labels = sorted({first_reference(ex.reference) for ex in examples})
        if not 2 <= len(labels) <= MAX_LABELS:
            raise DataError(
                f"{ctx.train_path()}: a head needs 2 to {MAX_LABELS} distinct training labels, found {len(labels)}",
                hint="map the label column: `train.fields: {reference: COLUMN}` in task.yaml",
            )
        return labels

    def prepare(self, ctx: LadderContext) -> list[Any]:
        self.labels(ctx)
        return self.training_records(ctx)

    def training_records(self, ctx: LadderContext) -> list[dict[str, Any]]:
        if self.name not in ctx.records:
            examples = with_references(ctx.train_examples(), "a classification head", ctx.train_path())
            examples = sample_records(examples, ctx.config.head.max_records, ctx.task.seed)
            # The text as the eval harness sends it (through the task's template): the head reads what it will read.
            ctx.records[self.name] = [{"text": ex.text, "label": first_reference(ex.reference)} for ex in examples]
        return ctx.records[self.name]

    def recipe(self, ctx: LadderContext, data: Path, *, max_steps: int | None = None) -> Any:
        from tailorlm.train.heads.config import HeadData, HeadRecipe, HeadTraining
        from tailorlm.train.sft.config import Strategy

        cfg = ctx.config.head
        return HeadRecipe(
            name=f"ladder-{self.name}", model=ctx.model, problem="classification", labels=self.labels(ctx),
            data=HeadData(path=str(data)), eval_fraction=0.1 if max_steps is None else 0.0,
            calibrate=max_steps is None, strategy=Strategy(method=cfg.method),  # type: ignore[arg-type]
            training=HeadTraining(epochs=cfg.epochs, max_steps=max_steps or cfg.max_steps, batch_size=cfg.batch_size,
                                  max_length=cfg.max_length, learning_rate=cfg.learning_rate, seed=ctx.task.seed),
        )  # fmt: skip

    def calibration_trainer(self, ctx: LadderContext, data: Path, steps: int, run: Any, callbacks: list[Any]) -> Any:
        from tailorlm.train.heads.recipe import build_trainer

        trainer, *_ = build_trainer(self.recipe(ctx, data, max_steps=steps), run, callbacks)
        return trainer

    def write_training_data(self, records: list[dict[str, Any]], path: Path) -> Path:
        """``{"text", "label"}`` lines: what `tailor train classify` reads."""
        from tailorlm.core.io import atomic_write_text

        return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def count_tokens(self, ctx: LadderContext, records: list[dict[str, Any]]) -> int:
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(ctx.model)
        ids = tokenizer([r["text"] for r in records], truncation=True, max_length=ctx.config.head.max_length)
        return sum(len(x) for x in ids["input_ids"])

    def build(self, ctx: LadderContext, out: Path) -> Built:
        from tailorlm.core.run import Run
        from tailorlm.train.heads.recipe import fit

        data = self.write_training_data(self.training_records(ctx), out / "train.jsonl")
        recipe = self.recipe(ctx, data)
        ctx.release_engine()
        display = ctx.training_display
        with Run.create(recipe.name, root=out / "runs", config=recipe, seed=ctx.task.seed, kind="classify") as run:
            if display is not None:
                with display() as callbacks:
                    system = fit(recipe, run, callbacks=callbacks)
            else:
                system = fit(recipe, run)
        metrics = json.loads((run.path / "metrics.json").read_text())
        return Built(
            system.model_copy(update={"name": self.name}), tokens=int(metrics.get("tokens") or 0),
            runs=[str(run.path)],
            canaries={"skipped": "a head System answers with labels: the generative LM is not used"},
            detail={"training": float(metrics.get("train_seconds") or 0.0)}, artifacts=[run.artifacts],
            notes=[f"{metrics.get('steps')} steps on {metrics.get('train_examples')} records, "
                   f"train loss {metrics.get('train_loss', float('nan')):.3f}"],
        )  # fmt: skip


def _question_renderer(ctx: LadderContext) -> Callable[[Any], str]:
    """The question as the eval harness shows it to a RAG System: the training example's text, already through
    the task's input template (with the record's own metadata and context), looked up by the query's id."""
    texts = {ex.id: ex.text for ex in ctx.train_examples()}

    def render(query: Any) -> str:
        return texts.get(query.id, query.question)

    return render


# The ladder's order: prompting, retrieval, then training (cheapest first, as guides tell teams to climb).
for _rung in (ZeroShot(), FewShot(), ChainOfThought(), OptimizedPrompt(), Rag(), RagFewShot(), Lora(), RagLora(),
              Head()):  # fmt: skip
    register_rung(_rung)

# Later techniques register their rungs the same way: alignment (tasks with preference pairs) and tool use.
import tailorlm.ladder.align_rungs  # noqa: E402
import tailorlm.ladder.tool_rungs  # noqa: E402, F401


def applicable(task: Task, names: list[str] | None = None) -> list[tuple[Rung, str | None]]:
    """Every rung (or the named ones, in ladder order) with why it is skipped (None: it runs)."""
    from tailorlm.errors import ConfigError

    if names is not None:
        unknown = [n for n in names if n not in RUNGS]
        if unknown:
            import difflib

            hint = difflib.get_close_matches(unknown[0], list(RUNGS), n=1)
            raise ConfigError(
                f"unknown rung {unknown[0]!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""),
                hint="rungs: " + ", ".join(RUNGS),
            )
    chosen = [r for n, r in RUNGS.items() if names is None or n in names]
    forced = names is not None
    return [(r, Rung.skip_reason(r, task) if forced and getattr(r, "heuristic", False) else r.skip_reason(task))
            for r in chosen]  # fmt: skip
