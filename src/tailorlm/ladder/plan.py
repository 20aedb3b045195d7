"""`tailor ladder --plan`: each rung's time and peak memory on this machine, before anything long runs.

Estimates come from a short calibration on the task itself, not from a table of hardware figures:
- **prompt and RAG rungs**: the rung's System answers the first eval batch; time per batch × batches. The batch
  lands in the prediction cache, so the ladder that follows does not pay for it twice.
- **decoding**: the zero-shot batch gives seconds per decoding step (its short prompts make prefill negligible);
  a RAG batch's remaining time is its prefill. A fine-tuned System answers as its training answers do, so its
  batches are priced as prefill + (the 90th percentile of reference lengths + a few tokens) decoding steps.
- **training**: three optimizer steps of the rung's own recipe on its own records; the later two give tokens per
  second, and the records' token count gives the whole run. Model loading, saving and canaries are added from
  what this calibration measured.
- **memory**: the peak resident memory seen while calibrating the rung.

The plan is cached in ``<ladder>/plan.json`` by rung key: an unchanged ladder reuses it, and the report puts each
estimate next to the figure the ladder measured (the target: within a factor of two).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tailorlm.core.io import atomic_write_json
from tailorlm.core.system import System
from tailorlm.ladder.context import LadderContext, release_memory
from tailorlm.ladder.result import Estimate
from tailorlm.ladder.rungs import Rung

PLAN_FILE = "plan.json"
# From this share of a batch's time, a part (decoding, or the prefill of long RAG prompts) is worth naming with the
# setting that cuts it: a RAG batch of long answers is about half each, and both settings then pay.
DOMINANT_SHARE = 0.4
CALIBRATION_STEPS = 3  # the first step warms up (allocations, kernels); the other two are timed
SAVE_S = 2.0  # writing an adapter and system.yaml
# Rungs whose training runs through LadderContext.train: their calibration steps are the real training's first.
REUSED_TRAINING = frozenset({"lora", "rag-lora"})


def _eval_size(ctx: LadderContext) -> int:
    from tailorlm.eval.examples import build_examples

    examples, _ = build_examples(ctx.task, ctx.config.eval_limit)
    return len(examples)


class Calibration:
    """Figures measured once per plan and shared by the rungs' estimates."""

    def __init__(self, ctx: LadderContext, console: Console) -> None:
        self.ctx = ctx
        self.console = console
        self.dir = ctx.dir / "plan"
        self.n_eval = _eval_size(ctx)
        self.batch = ctx.config.batch_size
        self.batches = math.ceil(self.n_eval / self.batch)
        self.load_s: float | None = None
        self.step_s: float | None = None  # seconds per decoding step of one batch
        self.canary_s = 0.0
        self.per_batch: dict[str, float] = {}
        self.prefill: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.drivers: dict[str, str] = {}  # per rung: what dominates its eval time, and the setting that cuts it

    def examples(self) -> list[Any]:
        from tailorlm.eval.examples import build_examples

        examples, _ = build_examples(self.ctx.task, self.batch)
        return examples

    def eval_batch(self, rung: Rung, system: System) -> float:
        """Answer the first eval batch with ``system``; returns its seconds and records prefill and step time."""
        from tailorlm.core.task import CanarySpec
        from tailorlm.eval.canary_check import check_canaries
        from tailorlm.eval.runner import EvalConfig, evaluate
        from tailorlm.ladder.runner import PeakMemory
        from tailorlm.models.default import cache_root

        task = rung.eval_task(self.ctx.task)
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            engine = self.ctx.engine_for(system)
            if self.load_s is None:
                self.load_s = time.perf_counter() - t0
            if not self.canary_s:
                t1 = time.perf_counter()
                spec = CanarySpec(enabled=True, limit=self.ctx.config.canary_limit)
                check_canaries(spec, System(model=system.model), lambda: engine, cache_root())
                self.canary_s = time.perf_counter() - t1
            config = EvalConfig(task=task.name, system=rung.name, batch_size=self.batch)
            res = evaluate(system, task, config=config, root=self.dir / "runs", engine=engine, progress=False,
                           examples=self.examples(), name=f"plan-{rung.name}")  # fmt: skip
        self.peak[rung.name] = memory.peak_mb
        rows = [json.loads(x) for x in (res.run.path / "predictions.jsonl").read_text().splitlines() if x.strip()]
        seconds = float(res.metrics["cost"]["wall_s"])
        if res.metrics["cost"].get("cached"):
            # Calibrated before (the prediction cache answered): the batch's latency is the original wall time.
            seconds = max(float(r.get("latency_s") or 0.0) for r in rows) or seconds
        steps = max((int(r.get("completion_tokens") or 0) for r in rows), default=1) or 1
        if rung.name == "zero-shot" or self.step_s is None:
            self.step_s = seconds / steps  # short prompts: decoding is nearly all of it
        self.per_batch[rung.name] = seconds
        self.prefill[rung.name] = max(seconds - steps * (self.step_s or 0.0), 0.1 * seconds)
        prompt_tokens = float(res.metrics["cost"].get("prompt_tokens_per_example") or 0.0)
        if driver := self.cost_driver(rung, seconds, steps, prompt_tokens, task.generation.max_new_tokens):
            self.drivers[rung.name] = driver
        return seconds

    def reference_tokens(self) -> float:
        """Mean tokens of the first eval batch's first references: how long the task's answers are."""
        from tailorlm.ladder.rungs import first_reference
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(self.ctx.model)
        refs = [first_reference(ex.reference) for ex in self.examples() if ex.reference] or [""]
        return sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs) / len(refs)

    def cost_driver(self, rung: Rung, seconds: float, steps: int, prompt_tokens: float, max_new: int) -> str | None:
        """What dominates a batch's time, in words a user can act on (None: nothing stands out).

        Decoding costs a step per new token for the batch's longest answer; a long-answer task with a generous
        ``max_new_tokens`` spends most of its eval there. RAG prompts add prefill: top_k passages per question.
        """
        if seconds <= 0 or self.step_s is None:
            return None
        decode_share = min(steps * self.step_s / seconds, 1.0)
        parts = []
        # Only a batch that decoded up to the cap can be cut by a lower cap: shorter ones stopped on their own.
        if decode_share >= DOMINANT_SHARE and steps >= 0.9 * max_new:
            avg = self.reference_tokens()
            line = (f"decoding is {decode_share:.0%} of each batch ({steps} new tokens, max_new_tokens {max_new}); "
                    f"answers average {avg:.0f} tokens")  # fmt: skip
            if max_new > 1.5 * avg + 16:
                parts.append(line + ": lower `generation.max_new_tokens` to cut eval time")
            else:
                parts.append(line + ": long answers cost decoding steps; `ladder.eval_limit` scores fewer examples")
        if 1 - decode_share >= DOMINANT_SHARE and "documents" in rung.uses:
            k = self.ctx.config.rag.top_k
            parts.append(f"prefill of {prompt_tokens:.0f} prompt tokens per question is {1 - decode_share:.0%} of "
                         f"each batch: lower `ladder.rag.top_k` ({k}) or `ladder.rag.chunk_tokens`")  # fmt: skip
        return "; ".join(parts) or None

    def answer_steps(self) -> int:
        """Decoding steps a fine-tuned System takes per batch: its answers are as long as the training answers."""
        from tailorlm.ladder.rungs import first_reference
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(self.ctx.model)
        refs = [first_reference(ex.reference) for ex in self.examples()] or ["x"]
        lengths = sorted(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs)
        p90 = lengths[min(len(lengths) - 1, int(0.9 * len(lengths)))]
        return min(p90 + 5, self.ctx.task.generation.max_new_tokens)  # + citation, newline or EOS

    def training(self, rung: Rung) -> tuple[float, float, float, int]:
        """(seconds per token, setup seconds, peak MB, tokens) from a few real optimizer steps of ``rung``."""
        from transformers import TrainerCallback

        from tailorlm.core.run import Run
        from tailorlm.ladder.runner import PeakMemory

        records = rung.training_records(self.ctx)
        out = self.dir / rung.name
        # A smoke run trains for a handful of steps: one warm-up and one timed step are enough to price it.
        max_steps = getattr(self.ctx.config, rung.training_config).max_steps
        steps = 2 if (max_steps or 99) <= 2 * CALIBRATION_STEPS else CALIBRATION_STEPS
        marks: list[tuple[float, int]] = []

        class Timer(TrainerCallback):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

        class Setup(TrainerCallback):  # type: ignore[misc]
            """Seconds from the start to the first step: model load and trainer setup (inserted as marks[0])."""

            def __init__(self, t0: float, marks: list[tuple[float, int]]) -> None:
                self.t0, self.marks = t0, marks

            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                self.marks.insert(0, (time.perf_counter() - self.t0, 0))

        self.ctx.release_engine()
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            # Rungs that train through ctx.train time the first steps of their real training, which then resumes
            # from them; the head (and a rung with a killed training waiting) times throwaway steps.
            cfg = getattr(self.ctx.config, rung.training_config)
            total = cfg.max_steps or math.ceil(math.ceil(len(records) / cfg.batch_size) * cfg.epochs)
            reused = (
                rung.name in REUSED_TRAINING
                and total > steps
                and self.ctx.start_training(
                    rung.name, records, self.ctx.dir / "rungs" / rung.name, steps, [Timer(), Setup(t0, marks)]
                )
            )
            if reused:
                setup = marks.pop(0)[0]
            else:
                data = rung.write_training_data(records, out / "train.jsonl")
                with Run.create(f"plan-{rung.name}", root=out / "runs", kind="plan") as run:
                    trainer = rung.calibration_trainer(self.ctx, data, steps, run, [Timer()])
                    setup = time.perf_counter() - t0
                    trainer.train()
                del trainer
        (t_a, n_a), (t_b, n_b) = marks[0], marks[-1]
        s_per_token = (t_b - t_a) / max(n_b - n_a, 1)
        tokens = rung.count_tokens(self.ctx, records)
        return s_per_token, setup, memory.peak_mb, tokens


def estimate_rung(cal: Calibration, rung: Rung) -> Estimate:
    ctx = cal.ctx
    cfg = ctx.config
    if rung.trains:
        s_per_token, setup, peak, tokens = cal.training(rung)
        t = getattr(cfg, rung.training_config)
        per_epoch = math.ceil(len(rung.training_records(ctx)) / t.batch_size)
        steps = t.max_steps or math.ceil(per_epoch * t.epochs)
        trained_tokens = int(tokens * steps / per_epoch)  # epochs, or a step budget, as a multiple of one epoch
        canaries = 0.0 if rung.name == "head" else cal.canary_s
        build = setup + trained_tokens * s_per_token + SAVE_S + canaries
        basis = f"{1 / s_per_token:.0f} tokens/s over {CALIBRATION_STEPS} steps × {trained_tokens:,} tokens"
        if rung.name == "head":  # one forward pass per batch, no decoding
            eval_s = (cal.load_s or 0.0) + cal.batches * cal.prefill.get("zero-shot", 0.0)
            return Estimate(build_s=round(build, 1), eval_s=round(eval_s, 1), peak_rss_mb=round(peak, 0), basis=basis)
        # Eval: the same prompts as the untrained stand-in (RAG's or zero-shot's), decoding as long as the answers.
        stand_in = "rag" if "documents" in rung.uses else "zero-shot"
        prefill = cal.prefill.get(stand_in, 0.0)
        batch_s = prefill + cal.answer_steps() * (cal.step_s or 0.0)
        eval_s = (cal.load_s or 0.0) + cal.batches * batch_s
        return Estimate(build_s=round(build, 1), eval_s=round(eval_s, 1), peak_rss_mb=round(peak, 0), basis=basis)
    if rung.name == "optimized-prompt":
        per_example = cal.per_batch.get("few-shot", cal.per_batch.get("zero-shot", 1.0)) / cal.batch
        o = cfg.optimize
        searched = o.pool_size + o.budget * o.dev_size + 2 * o.dev_size
        build = searched * per_example
        return Estimate(build_s=round(build, 1), eval_s=round(cal.batches * per_example * cal.batch, 1),
                        peak_rss_mb=cal.peak.get("few-shot"),
                        basis=f"{searched} search answers at the few-shot rate")  # fmt: skip
    return Estimate(
        build_s=0.5,
        eval_s=round(cal.batches * cal.per_batch[rung.name], 1),
        peak_rss_mb=round(cal.peak.get(rung.name, 0.0), 0),
        basis=f"{cal.batches} batches × {cal.per_batch[rung.name]:.1f} s (first one timed)",
        dominant=cal.drivers.get(rung.name),
    )


def make_plan(ctx: LadderContext, rungs: list[Rung], *, console: Console) -> dict[str, Estimate]:
    """Estimates per rung name; cached in ``<ladder>/plan.json`` by the rungs' keys."""
    from tailorlm.ladder.cache import rung_key

    keys = {r.name: rung_key(ctx.task, r.name, ctx.model, r.config_keys, set(r.uses)) for r in rungs}
    path = ctx.dir / PLAN_FILE
    cached = _read(path)
    if cached is not None and all(cached.get("keys", {}).get(n) == k for n, k in keys.items()):
        return {n: Estimate.model_validate(e) for n, e in cached["estimates"].items() if n in keys}

    console.print("[bold]planning[/]: timing the first eval batch of each rung and a few training steps")
    t0 = time.perf_counter()
    cal = Calibration(ctx, console)
    estimates: dict[str, Estimate] = {}
    errors: dict[str, str] = {}
    order = sorted(rungs, key=lambda r: (r.trains, r.name != "zero-shot"))  # zero-shot first: it sets step time
    for rung in order:
        t_rung = time.perf_counter()
        try:
            if not rung.trains and rung.name != "optimized-prompt":
                cal.eval_batch(rung, ctx.with_engine(rung.build(ctx, ctx.dir / "plan" / rung.name).system))
            elif rung.trains:
                stand_in = "rag" if "documents" in rung.uses else "zero-shot"
                if stand_in not in cal.per_batch:
                    from tailorlm.ladder.rungs import RUNGS

                    stand_in_system = RUNGS[stand_in].build(ctx, ctx.dir / "plan" / stand_in).system
                    cal.eval_batch(RUNGS[stand_in], ctx.with_engine(stand_in_system))
            estimates[rung.name] = estimate_rung(cal, rung)
            release_memory()
            console.print(f"[dim]  {rung.title}: calibrated in {time.perf_counter() - t_rung:.0f} s[/]")
        except Exception as err:
            # The rung itself will run (and fail there with its traceback, if the error is real); only its
            # estimate is missing.
            errors[rung.name] = f"{type(err).__name__}: {err}"
            console.print(f"[yellow]  {rung.title}: could not be calibrated ({escape(errors[rung.name])})[/]")
    ctx.release_engine()
    console.print(f"[dim]calibrated in {time.perf_counter() - t0:.0f} s[/]")
    # The index is built during the plan (prompt lengths need it); later RAG rungs find it unchanged.
    atomic_write_json(path, {"keys": keys, "estimates": {n: e.model_dump() for n, e in estimates.items()},
                             "errors": errors, "calibration_s": round(time.perf_counter() - t0, 1),
                             "n_eval": cal.n_eval})  # fmt: skip
    return {r.name: estimates[r.name] for r in rungs if r.name in estimates}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def plan_table(rungs: list[Rung], plan: dict[str, Estimate]) -> Table:
    table = Table(title="plan: estimated on this machine")
    for col in ("rung", "build", "eval", "total", "peak memory", "how"):
        table.add_column(col, justify="left" if col in ("rung", "how") else "right")
    total = 0.0
    for rung in rungs:
        e = plan.get(rung.name)
        if e is None:
            table.add_row(rung.title, "–", "–", "–", "–", "[red]calibration failed[/]")
            continue
        total += e.total_s
        table.add_row(rung.title, _clock(e.build_s), _clock(e.eval_s), _clock(e.total_s),
                      f"{e.peak_rss_mb:,.0f} MB" if e.peak_rss_mb else "–", e.basis)  # fmt: skip
    table.add_section()
    table.add_row("[bold]ladder[/]", "", "", f"[bold]{_clock(total)}[/]", "", "")
    drivers = [f"{r.title}: {e.dominant}" for r in rungs if (e := plan.get(r.name)) is not None and e.dominant]
    if drivers:  # what to change to make the ladder cheaper, as a caption the user reads under the totals
        table.caption = "what dominates the cost:\n" + "\n".join(escape(d) for d in drivers)
        table.caption_justify = "left"
    return table


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"
