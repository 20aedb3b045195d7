"""Prompt optimization: bootstrap few-shot demonstrations and random search, scored by the eval harness.

In the spirit of DSPy's BootstrapFewShotWithRandomSearch (Khattab et al. 2023):

1. Split the task's eval set, seeded, into a demonstration pool, a dev split and a held-out test split.
2. Bootstrap: answer the pool with the starting program; examples it gets right become demonstrations, with the
   model's own completion (its reasoning included) as the output. Labelled examples fill in when too few succeed.
3. Random search: evaluate ``budget`` candidate programs on dev. Candidates vary the demonstrations (a random
   subset of the bootstrapped ones) and the instruction (the starting one, any given ones, and rewrites proposed by
   an optional Engine).
4. The best dev candidate and the starting program are both scored on the test split, so an optimizer that
   overfits dev shows it: the report puts dev and test side by side.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from tailorlm.core.config import StrictModel
from tailorlm.core.io import atomic_write_json
from tailorlm.core.run import Run
from tailorlm.core.system import FewShotExample, PromptSpec, System
from tailorlm.core.task import Task
from tailorlm.errors import ConfigError
from tailorlm.eval.examples import Example, build_examples
from tailorlm.eval.runner import EvalConfig, evaluate
from tailorlm.models.engines.base import GenerationParams

_PROPOSE = (
    "Here is an instruction given to an assistant for a task.\n\nInstruction: {instruction}\n\nTask examples:\n"
    "{examples}\n\nWrite one improved instruction for this task. Reply with the instruction only."
)


class OptimizeConfig(StrictModel):
    budget: int = Field(8, ge=1, description="Candidate programs evaluated on the dev split (the start included).")
    k: int = Field(4, ge=0, description="Demonstrations per candidate.")
    pool_size: int = Field(40, ge=0, description="Eval examples used as the demonstration pool.")
    dev_size: int = Field(40, ge=1, description="Eval examples that rank candidates.")
    test_size: int | None = Field(None, ge=1, description="Held-out examples (default: all the rest).")
    instructions: list[str] = Field(default_factory=list, description="Extra system instructions to try.")
    propose_with: str | None = Field(None, description="Model spec of an Engine that proposes instruction rewrites.")
    n_proposals: int = Field(2, ge=0, description="Instruction rewrites to ask the proposer for.")
    seed: int = Field(0, description="Seed for the splits and the search.")
    batch_size: int = Field(8, ge=1)


@dataclass
class Candidate:
    name: str
    prompt: PromptSpec | None
    dev: float | None = None
    run: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizeResult:
    run: Run
    best: System
    candidates: list[Candidate]
    dev: dict[str, float]  # start / best
    test: dict[str, float]  # start / best


def split_examples(examples: list[Example], cfg: OptimizeConfig) -> tuple[list[Example], list[Example], list[Example]]:
    """Seeded pool / dev / test split of the eval examples."""
    order = list(examples)
    random.Random(cfg.seed).shuffle(order)
    pool, rest = order[: cfg.pool_size], order[cfg.pool_size :]
    dev, rest = rest[: cfg.dev_size], rest[cfg.dev_size :]
    test = rest[: cfg.test_size] if cfg.test_size else rest
    if not dev or not test:
        raise ConfigError(
            f"{len(examples)} eval examples are too few for pool {cfg.pool_size} + dev {cfg.dev_size} + a test split"
        )
    return pool, dev, test


def _with_prompt(system: System, prompt: PromptSpec | None, name: str) -> System:
    return system.model_copy(update={"prompt": prompt, "name": name})


def _score(result: Any, metric: str) -> float:
    return float(result.metrics["metrics"][metric]["value"])


def optimize_prompt(
    system: System,
    task: Task,
    cfg: OptimizeConfig | None = None,
    *,
    root: str | Path = "runs",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    examples: list[Example] | None = None,
) -> OptimizeResult:
    """Search for a better prompt program for ``system`` on ``task``; returns the best System and the scores.

    ``examples`` searches on records the caller has read (the ladder's training records, chat files included)
    instead of the task's eval set."""
    cfg = cfg or OptimizeConfig()
    metric = task.primary
    if examples is None:
        examples, _ = build_examples(task)
    pool, dev, test = split_examples(examples, cfg)
    start = system.prompt or PromptSpec()
    rng = random.Random(cfg.seed)

    with Run.create(
        f"prompt-optimize-{task.name}", root=root, config=cfg, seed=cfg.seed, kind="prompt-optimize"
    ) as run:
        evals = run.path / "evals"

        def run_eval(sys_: System, subset: list[Example], label: str) -> Any:
            conf = EvalConfig(task=task.name, system=sys_.name, batch_size=cfg.batch_size)
            return evaluate(
                sys_,
                task,
                config=conf,
                root=evals,
                cache_dir=cache_dir,
                examples=subset,
                name=label,
                progress=progress,
            )

        # 1. bootstrap demonstrations from the pool
        demos: list[FewShotExample] = []
        labelled = [FewShotExample(input=ex.text, output=_first(ex.reference)) for ex in pool if ex.reference]
        if pool and cfg.k:
            boot = run_eval(_with_prompt(system, start, "bootstrap"), pool, "bootstrap")
            predictions = _read_predictions(Path(boot.run.path))
            for ex, pred in zip(pool, predictions, strict=True):
                if pred["scores"].get(metric, 0.0) >= 1.0:
                    demos.append(FewShotExample(input=ex.text, output=pred.get("raw", pred["prediction"])))
            run.logger.info("bootstrapped %d of %d pool examples as demonstrations", len(demos), len(pool))

        # 2. candidate instructions
        instructions = [start.system, *cfg.instructions]
        if cfg.propose_with:
            instructions += _propose(cfg, start.system or "", dev)

        # 3. candidates: start, labelled few-shot, then random search over demos x instructions
        candidates = [Candidate("start", start)]
        if labelled and cfg.k and cfg.budget > 1:
            prompt = start.model_copy(update={"few_shot": labelled[: cfg.k], "selection": None})
            candidates.append(Candidate("labelled-first-k", prompt, meta={"demos": "labelled"}))
        source = demos + [d for d in labelled if d.input not in {x.input for x in demos}]
        while len(candidates) < cfg.budget and (source or len(set(instructions)) > 1):
            k = min(cfg.k, len(source))
            chosen = rng.sample(source, k) if k else []
            instruction = rng.choice(instructions)
            prompt = start.model_copy(update={"few_shot": chosen, "selection": None, "system": instruction})
            n_boot = sum(1 for d in chosen if d in demos)
            candidates.append(
                Candidate(
                    f"search-{len(candidates)}", prompt, meta={"bootstrapped": n_boot, "instruction": instruction}
                )
            )

        for cand in candidates:
            res = run_eval(_with_prompt(system, cand.prompt, cand.name), dev, f"dev-{cand.name}")
            cand.dev, cand.run = _score(res, metric), str(res.run.path)

        # 4. the best on dev (ties: the shorter prompt), then start and best on the held-out test split
        best = max(candidates, key=lambda c: (c.dev, -len(c.prompt.few_shot if c.prompt else [])))
        start_test = _score(run_eval(_with_prompt(system, start, "start"), test, "test-start"), metric)
        best_test = start_test
        if best is not candidates[0]:
            best_test = _score(run_eval(_with_prompt(system, best.prompt, best.name), test, "test-best"), metric)

        best_system = _with_prompt(system, best.prompt, f"{system.name}-optimized").model_copy(
            update={"created_by": run.id, "parent": system.parent}
        )
        best_system.save(run.artifacts)
        dev_scores = {"start": candidates[0].dev or 0.0, "best": best.dev or 0.0}
        test_scores = {"start": start_test, "best": best_test}
        summary = {
            "metric": metric,
            "dev": dev_scores,
            "test": test_scores,
            "best": best.name,
            "bootstrapped_demos": len(demos),
            "splits": {"pool": len(pool), "dev": len(dev), "test": len(test)},
            "candidates": [{"name": c.name, "dev": c.dev, "run": c.run, **c.meta} for c in candidates],
        }
        atomic_write_json(run.path / "optimize.json", summary)
        run.write_metrics(
            {
                "dev_start": dev_scores["start"],
                "dev_best": dev_scores["best"],
                **{"test_start": start_test, "test_best": best_test},
            }
        )
    return OptimizeResult(run=run, best=best_system, candidates=candidates, dev=dev_scores, test=test_scores)


def _first(reference: Any) -> str:
    return reference if isinstance(reference, str) else str(reference[0])


def _read_predictions(run_dir: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines() if line.strip()]


def _propose(cfg: OptimizeConfig, instruction: str, dev: list[Example]) -> list[str]:
    """Ask an Engine for instruction rewrites (sampled, so each proposal differs)."""
    from tailorlm.models.build import build_engine

    engine = build_engine(System(model=cfg.propose_with or "default"))
    shown = "\n".join(f"- {ex.text[:200]}" for ex in dev[:3])
    prompt = _PROPOSE.format(instruction=instruction or "(none)", examples=shown)
    params = GenerationParams(max_new_tokens=80, temperature=0.9, seed=cfg.seed)
    outs = engine.generate([prompt] * cfg.n_proposals, params)
    return [o.text.strip().splitlines()[0] for o in outs if o.text.strip()]
