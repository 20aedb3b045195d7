"""Harmlessness: how a System answers red-team prompts.

    red-team prompts (packaged: 100 first turns of Anthropic's HH-RLHF harmless-base test split)
      → the System's prompt program → prediction cache → batched generation of the misses
      → refusal detector (phrase patterns, tailorlm.eval.probes.refusal) → refusal rate with a Wilson CI, per category
      → optionally a reward model's score, or an LLM judge's 1-10 grade (MT-Bench single grading), with bootstrap CIs

Answers are cached like eval predictions (same cache file per System and engine), so a re-run generates nothing
and a killed probe resumes. Every answer is kept in the probe's Run (``predictions.jsonl``) for reading.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tailorlm.core.io import atomic_write_json, atomic_write_text
from tailorlm.core.run import Run
from tailorlm.core.system import LOCAL_ENGINES, SYSTEM_FILE, System
from tailorlm.errors import ConfigError, DataError, TailorError
from tailorlm.eval.probes.rates import Rate, rate
from tailorlm.eval.probes.refusal import detect_refusal

PACKAGED_PROMPTS = "tailorlm/eval/data/red_team.jsonl"
# Refusals come in the first sentence; 128 tokens also leave a reward model or judge enough of the answer to score.
DEFAULT_MAX_NEW_TOKENS = 128
MAX_SHOWN = 5

# What the probe cannot show, whatever its numbers: every report carries these (``HarmlessnessReport.limits``).
LIMITS = [
    "Refusal patterns miss soft refusals (changing the subject, a lecture with no answer, a useless answer) "
    "and count 'I'm sorry, but here is how…' as a refusal.",
    "A refusal rate is not a harm rate: a System that refuses everything scores 100% and is useless. Read it "
    "next to the Task's own metrics.",
    "The prompts are 100 English first turns from one dataset (HH-RLHF harmless-base); jailbreaks, multi-turn "
    "attacks and other languages are not tested.",
    "A reward model's or judge's score is only as good as that model; a small judge's grades are close to noise.",
]


class RedTeamPrompt(BaseModel):
    prompt: str
    category: str = "other"
    source: str = ""


class Score(BaseModel):
    """Mean score of the answers with a bootstrap CI, and what gave it."""

    scorer: str  # "reward model PATH" or "judge SPEC"
    mean: float | None  # None when no answer could be scored
    low: float | None
    high: float | None
    n: int  # answers scored
    n_unscored: int = 0  # judge answers with no readable rating


class AnswerShown(BaseModel):
    prompt: str
    category: str
    answer: str
    refusal: str | None  # the refusal pattern it matched


class HarmlessnessReport(BaseModel):
    probe: str = "harmlessness"
    system: str
    prompts: str  # the prompt file
    n: int
    max_new_tokens: int
    refusal_rate: Rate
    by_category: dict[str, Rate]
    by_pattern: dict[str, int]  # refusal pattern → answers it matched
    reward: Score | None = None
    judge: Score | None = None
    refused: list[AnswerShown]
    answered: list[AnswerShown]  # not refused: the answers to read first
    run: str
    generated: int
    cached: int
    notes: list[str]  # about this run (e.g. a retriever that was not used)
    limits: list[str]  # what the probe cannot show: LIMITS, then the notes


def load_red_team(path: str | Path | None = None) -> tuple[list[RedTeamPrompt], str]:
    """The prompts of a JSONL file of ``{"prompt", "category"?, "source"?}`` (the packaged set when None)."""
    if path is None:
        text = resources.files("tailorlm.eval").joinpath("data", "red_team.jsonl").read_text(encoding="utf-8")
        where = PACKAGED_PROMPTS
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"prompt file {str(p)!r} not found", hint='one JSON object per line: {"prompt": "..."}')
        text, where = p.read_text(encoding="utf-8"), str(p)
    prompts, issues = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = RedTeamPrompt.model_validate(json.loads(line))
        except ValueError as err:
            issues.append(f"{where}:{line_no}: {str(err).splitlines()[0]}")
            continue
        if not item.prompt.strip():
            issues.append(f"{where}:{line_no}: empty prompt")
            continue
        prompts.append(item)
    if issues:
        raise DataError(f"{len(issues)} bad line(s) in {where}", issues=issues)
    if not prompts:
        raise DataError(f"{where} holds no prompts")
    return prompts, where


def _reward_scores(path: str, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
    try:
        # Imported only when asked: the scorer pulls in the training stack, which the probe does not otherwise need.
        from tailorlm.train.align.scorer import RewardModelScorer
    except ImportError as err:
        raise TailorError(
            "--reward-model needs tailorlm.train.align.scorer, which this installation lacks",
            hint="score with --judge instead, or update tailorlm",
        ) from err
    scorer = RewardModelScorer(path)
    scores = scorer.score([[{"role": "user", "content": p}] for p in prompts], list(answers))
    return [float(s) for s in scores]


def _judge_grades(spec: str, prompts: Sequence[str], answers: Sequence[str], device: str, dtype: str) -> list[Any]:
    from tailorlm.eval.judge import judge_single
    from tailorlm.models.build import build_engine

    path = Path(spec)
    if path.is_file() or (path.is_dir() and (path / SYSTEM_FILE).is_file()):
        judge_system = System.load(path)
    else:
        # A bare model: on transformers, so the grade can be read from the rating tokens' probabilities.
        judge_system = System(name=path.name or spec, model=spec, engine="hf")
    engine = build_engine(judge_system, device=device, dtype=dtype)
    mode = "logprob" if type(engine).__name__ == "HFEngine" else "generate"
    items = [{"instruction": p, "output": a} for p, a in zip(prompts, answers, strict=True)]
    return judge_single(engine, items, mode=mode, max_output_tokens=DEFAULT_MAX_NEW_TOKENS)


def _score(scorer: str, values: Sequence[float | None], confidence: float, resamples: int, seed: int) -> Score:
    from tailorlm.eval.stats import bootstrap_ci

    got = [float(v) for v in values if v is not None]
    if not got:
        return Score(scorer=scorer, mean=None, low=None, high=None, n=0, n_unscored=len(values))
    ci = bootstrap_ci(got, n_resamples=resamples, confidence=confidence, seed=seed)
    return Score(
        scorer=scorer, mean=ci["mean"], low=ci["low"], high=ci["high"], n=len(got), n_unscored=len(values) - len(got)
    )


def probe_harmlessness(
    system: System,
    *,
    prompts: str | Path | None = None,
    limit: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    reward_model: str | None = None,
    judge: str | None = None,
    root: str | Path = "runs",
    cache_dir: str | Path | None = None,
    engine: Any = None,
    progress: bool = True,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    use_cache: bool = True,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> HarmlessnessReport:
    """Answer the red-team prompts with ``system`` and report its refusal rate (and a reward or judge score)."""
    from tailorlm.eval.cache import PredictionCache, example_key
    from tailorlm.eval.runner import generate_missing
    from tailorlm.models.build import build_engine
    from tailorlm.models.default import cache_root
    from tailorlm.models.engines.base import Completion
    from tailorlm.models.engines.select import resolve_engine
    from tailorlm.prompting.answerer import build_requests, finalize, sampling_plan

    if system.head is not None:
        raise ConfigError(
            f"System {system.name!r} has a classification head: it answers with labels, so it cannot refuse",
            hint="probe the generative System it was built from",
        )
    items, where = load_red_team(prompts)
    items = items[:limit] if limit else items
    notes = []
    if system.retriever is not None or system.tools or system.agent is not None:
        notes.append("answered by the System's model and prompt program, without its retriever, tools or agent loop")
    tokenizer = None
    if system.prompt and system.prompt.max_prompt_tokens and system.engine in LOCAL_ENGINES:
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(system.model)
    requests = build_requests(system.prompt, [it.prompt for it in items], tokenizer)
    base = system.generation.model_copy(update={"max_new_tokens": max_new_tokens})
    n_samples, params = sampling_plan(system.prompt, base)
    if params.constraint is not None and system.engine == "auto":
        system = system.model_copy(update={"engine": "hf"})  # constrained decoding runs on transformers
    # Keyed as the eval runner keys them, so the same question under the same settings is answered once.
    key_params = {**params.model_dump(mode="json"), "n_samples": n_samples}
    keys = [example_key(m, key_params) for m in requests]
    choice = resolve_engine(system, device=device, dtype=dtype)
    cache_path = Path(cache_dir) if cache_dir else cache_root()
    cache = (
        PredictionCache.for_system(cache_path, system, {"engine": choice.name, **choice.settings})
        if use_cache
        else None
    )
    config = {
        "system": system.name,
        "prompts": where,
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "reward_model": reward_model,
        "judge": judge,
    }

    with Run.create("probe-harmless", root=root, config=config, seed=seed, parent=system.parent, kind="probe") as run:
        system.save(run.artifacts)

        def get_engine() -> Any:
            nonlocal engine
            if engine is None:  # built on first use: a fully cached probe loads no model
                engine = build_engine(system, device=device, dtype=dtype, batch_size=batch_size)
            return engine

        done, generated = generate_missing(
            get_engine,
            list(zip(keys, requests, strict=True)),
            params,
            cache,
            chunk_size=max(batch_size * 4 // n_samples, 1),
            n_samples=n_samples,
            progress=progress,
        )
        # The full completion is what is judged: a refusal lives in what the model wrote, not in an extracted answer.
        answers = [
            finalize(system.prompt, [Completion.model_validate(c) for c in done[k]["samples"]]).raw for k in keys
        ]
        refusals = [detect_refusal(a) for a in answers]
        texts = [it.prompt for it in items]
        rewards: list[float] = []
        grades: list[Any] = []
        reward = None
        if reward_model:
            rewards = _reward_scores(reward_model, texts, answers)
            reward = _score(f"reward model {reward_model}", rewards, confidence, resamples, seed)
        judged = None
        if judge:
            grades = _judge_grades(judge, texts, answers, device, dtype)
            judged = _score(f"judge {judge}", [g.get("score") for g in grades], confidence, resamples, seed)
        rows = []
        for i, (it, a, r) in enumerate(zip(items, answers, refusals, strict=True)):
            row: dict[str, Any] = {"id": i, **it.model_dump(), "answer": a, "refusal": r}
            if reward_model:
                row["reward"] = rewards[i]
            if judge:
                row["judge"] = grades[i].get("score")
            rows.append(json.dumps(row, ensure_ascii=False))
        atomic_write_text(run.path / "predictions.jsonl", "\n".join(rows) + "\n")

        categories = sorted({it.category for it in items})
        by_category = {}
        for c in categories:
            in_c = [r for it, r in zip(items, refusals, strict=True) if it.category == c]
            by_category[c] = rate(sum(r is not None for r in in_c), len(in_c), confidence)
        by_pattern: dict[str, int] = {}
        for r in refusals:
            if r is not None:
                by_pattern[r] = by_pattern.get(r, 0) + 1
        shown = [
            AnswerShown(prompt=it.prompt, category=it.category, answer=a, refusal=r)
            for it, a, r in zip(items, answers, refusals, strict=True)
        ]
        report = HarmlessnessReport(
            system=system.name,
            prompts=where,
            n=len(items),
            max_new_tokens=max_new_tokens,
            refusal_rate=rate(sum(r is not None for r in refusals), len(items), confidence),
            by_category=by_category,
            by_pattern=by_pattern,
            reward=reward,
            judge=judged,
            refused=[s for s in shown if s.refusal is not None][:MAX_SHOWN],
            answered=[s for s in shown if s.refusal is None][:MAX_SHOWN],
            run=str(run.path),
            generated=generated,
            cached=len(set(keys)) - generated,
            notes=notes,
            limits=[*LIMITS, *notes],
        )
        atomic_write_json(run.path / "harmlessness.json", report.model_dump(mode="json"))
        run.write_metrics({"refusal_rate": report.refusal_rate.value})
    return report
