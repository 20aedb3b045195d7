"""`tailor eval`: answer a Task's eval set with a System, score it, and keep everything in a Run.

    examples → messages (System's prompt program) → cache lookup → batched generation of the misses
             → per-example scores → bootstrap CIs → predictions.jsonl + metrics.json

Generation goes through the Engine in chunks; each chunk is appended to the prediction cache before the next
starts, so a killed evaluation loses at most one chunk and a re-run generates only what is missing.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tailorlm.core.config import StrictModel
from tailorlm.core.io import atomic_write_json, atomic_write_text
from tailorlm.core.run import Run
from tailorlm.core.system import LOCAL_ENGINES, System
from tailorlm.core.task import Task
from tailorlm.eval.cache import PredictionCache, example_key
from tailorlm.eval.canary_check import check_canaries
from tailorlm.eval.examples import Example, build_examples
from tailorlm.eval.scoring import score_examples
from tailorlm.models.default import cache_root
from tailorlm.models.engines.base import Completion, Request
from tailorlm.models.engines.select import resolve_engine
from tailorlm.prompting.answerer import Answer, abstention, attach_sources, build_requests, finalize, sampling_plan


class EvalConfig(StrictModel):
    """What `tailor eval` was asked to do; snapshotted into the run."""

    task: str
    system: str
    limit: int | None = None
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    use_cache: bool = True


@dataclass
class EvalResult:
    run: Run
    metrics: dict[str, Any]
    generated: int  # examples generated in this invocation (the rest came from the cache)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _tool_constraint(params: Any, tools: list[dict[str, Any]], metadata: dict[str, Any]) -> Any:
    """A ``tool_calls`` constraint in the task's decoding, completed with this example's tools. Several calls are
    allowed only where the example says it expects them (``metadata.parallel``, or a BFCL ``parallel`` category):
    a greedy small model allowed to repeat a call repeats it until the token budget runs out."""
    constraint = params.constraint
    if constraint is None or constraint.type != "tool_calls" or constraint.tools:
        return None
    parallel = bool(metadata.get("parallel", str(metadata.get("category", "")).startswith("parallel")))
    return constraint.model_copy(update={"tools": tools, "parallel": parallel})


def generate_missing(
    get_engine: Callable[[], Any],
    requests: list[tuple[str, list[dict[str, Any]]]],
    params: Any,
    cache: PredictionCache | None,
    *,
    chunk_size: int,
    n_samples: int = 1,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Return ``key -> {"samples": [completion, ...]}`` for every request, generating only what the cache lacks.

    ``n_samples`` completions are drawn per request (self-consistency), all in the same batched call.
    ``get_engine`` is called only when something is missing, so a fully cached run loads no model.
    """
    done = cache.load() if cache else {}
    missing = [(k, m) for k, m in requests if k not in done]
    seen: set[str] = set()
    missing = [(k, m) for k, m in missing if not (k in seen or seen.add(k))]  # duplicates generate once
    with _progress(progress and bool(missing)) as bar:
        task = bar.add_task("generating", total=len(missing))
        for start in range(0, len(missing), chunk_size):
            chunk = missing[start : start + chunk_size]
            flat = [m for _, m in chunk for _ in range(n_samples)]
            completions: list[Completion] = get_engine().generate(flat, params)
            fresh = [
                (k, {"samples": [c.model_dump() for c in completions[i * n_samples : (i + 1) * n_samples]]})
                for i, (k, _) in enumerate(chunk)
            ]
            if cache:
                cache.append(fresh)
            done.update(fresh)
            bar.advance(task, len(chunk))
            if on_chunk:
                on_chunk(start // chunk_size + 1)
    return done, len(missing)


def evaluate(
    system: System,
    task: Task,
    *,
    config: EvalConfig | None = None,
    root: str | Path = "runs",
    cache_dir: str | Path | None = None,
    engine: Any = None,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    examples: list[Example] | None = None,
    name: str | None = None,
) -> EvalResult:
    """Evaluate ``system`` on ``task``; returns the Run and the metrics written to ``metrics.json``.

    ``examples`` evaluates a given subset (e.g. a dev split) instead of loading the task's eval set.
    """
    from tailorlm.models.build import build_engine

    config = config or EvalConfig(task=task.name, system=system.name)
    dataset = None
    if examples is None:
        examples, dataset = build_examples(task, config.limit)
    tokenizer = None
    if system.prompt and system.prompt.max_prompt_tokens and system.engine in LOCAL_ENGINES:
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(system.model)
    inputs = [ex.text for ex in examples]
    rag = None
    if system.retriever is not None:
        # Retrieval happens before the cache lookup: the sources are part of the request, so a changed index
        # changes the cache key instead of serving stale answers.
        from tailorlm.rag.answer import RagAnswerer

        if tokenizer is None and system.engine in LOCAL_ENGINES:
            from tailorlm.models.load import load_tokenizer

            tokenizer = load_tokenizer(system.model)
        queries = [str(ex.record.get("input") or ex.text) for ex in examples]
        rag = RagAnswerer(system, tokenizer=tokenizer, answer_tokens=task.generation.max_new_tokens).prepare(
            inputs, queries
        )
        inputs = [c.input or c.question for c in rag]
    requests: list[Any] = list(build_requests(system.prompt, inputs, tokenizer))
    n_samples, params = sampling_plan(system.prompt, task.generation)
    if params.constraint is None and system.generation.constraint is not None:
        # A System that holds its answers to a grammar (a label set, a JSON schema) is scored as it answers.
        params = params.model_copy(update={"constraint": system.generation.constraint})
    key_params = {**params.model_dump(mode="json"), "n_samples": n_samples}
    keys = [example_key(m, key_params) for m in requests]
    # Tools the model may call (the example's own, as BFCL's are, else the System's): rendered with the messages,
    # and part of the cache key.
    for i, ex in enumerate(examples):
        metadata = ex.record.get("metadata") or {}
        tools = metadata.get("tools") or system.tools
        if tools:
            constraint = _tool_constraint(params, tools, metadata)
            keys[i] = example_key({"messages": requests[i], "tools": tools}, key_params)
            requests[i] = Request(messages=requests[i], tools=tools, constraint=constraint)
    if params.constraint is not None and params.constraint.type == "tool_calls" and params.constraint.tools is None:
        # A template: the requests carry their own (completed) constraints; the call itself has none.
        params = params.model_copy(update={"constraint": None})
        if system.engine == "auto":
            system = system.model_copy(update={"engine": "hf"})
    if params.constraint is not None and system.engine == "auto":
        # Constrained decoding runs on transformers (CTranslate2 has no logits hook): say so in the System.
        system = system.model_copy(update={"engine": "hf"})
    abstained = {i for i, c in enumerate(rag or []) if c.abstain}
    cache_dir = Path(cache_dir) if cache_dir else cache_root()
    choice = resolve_engine(system, device=config.device, dtype=config.dtype)
    engine_record = {"engine": choice.name, **choice.settings}
    cache = PredictionCache.for_system(cache_dir, system, engine_record) if config.use_cache else None

    with Run.create(
        name or f"eval-{task.name}", root=root, config=config, seed=task.seed, parent=system.parent, kind="eval"
    ) as run:
        system.save(run.artifacts)
        if dataset is not None:
            run.record_dataset("eval", str(dataset.source), dataset.fingerprint, len(examples))
        start = time.perf_counter()
        load_s = 0.0

        def get_engine() -> Any:
            # Built on first use: a fully cached evaluation never loads the model at all.
            nonlocal engine, load_s
            if engine is None:
                t0 = time.perf_counter()
                engine = build_engine(system, device=config.device, dtype=config.dtype, batch_size=config.batch_size)
                load_s = time.perf_counter() - t0
            return engine

        completions, generated = generate_missing(
            get_engine,
            [(k, r) for i, (k, r) in enumerate(zip(keys, requests, strict=True)) if i not in abstained],
            params,
            cache,
            chunk_size=max(config.batch_size * 4 // n_samples, 1),
            n_samples=n_samples,
            progress=progress,
            on_chunk=on_chunk,
        )
        wall = time.perf_counter() - start
        ordered = [
            abstention(system)
            if i in abstained
            else finalize(system.prompt, [Completion.model_validate(c) for c in completions[k]["samples"]])
            for i, k in enumerate(keys)
        ]
        if rag is not None:
            ordered = [attach_sources(a, c) for a, c in zip(ordered, rag, strict=True)]
        metrics = _summarize(task, system, examples, ordered, wall_s=wall, load_s=load_s, generated=generated)
        # Which engine answered, with its settings: figures from two engines are never compared blindly.
        metrics["engine"] = {**choice.record(), **(getattr(engine, "settings", None) or {})}
        if rag is not None:
            from tailorlm.rag.evaluation import citation_metrics

            metrics["rag"] = citation_metrics(
                [
                    {
                        "reference": ex.reference,
                        "sources": a.sources,
                        "citations": a.citations,
                        "abstained": a.abstained,
                    }
                    for ex, a in zip(examples, ordered, strict=True)
                ]
            )
        canaries = check_canaries(task.canaries, system, get_engine, cache_dir)
        if canaries is not None:
            metrics["canaries"] = canaries
            metrics["promotable"] = canaries.get("promotable", True)
        _write_predictions(run, examples, ordered, metrics.pop("_per_example"))
        atomic_write_json(run.path / "metrics.json", metrics)
        run.write_metrics({metric: m["value"] for metric, m in metrics["metrics"].items()})
        run.logger.info(
            "evaluated %d examples (%d generated, %d cached)", len(examples), generated, len(examples) - generated
        )
    return EvalResult(run=run, metrics=metrics, generated=generated)


def _summarize(
    task: Task,
    system: System,
    examples: list[Example],
    answers: list[Answer],
    *,
    wall_s: float,
    load_s: float,
    generated: int,
) -> dict[str, Any]:
    from tailorlm.eval.metrics.cost import summarize_latency

    scored = score_examples(task, examples, [a.text for a in answers])
    prompt_tokens = sum(a.usage.prompt_tokens for a in answers)
    completion_tokens = sum(a.usage.completion_tokens for a in answers)
    # Latency is what each request waited: its batch's wall time (batched engines share it across the batch).
    latency = summarize_latency([a.latency_s for a in answers]) if answers else {}
    gen_time = sum({a.latency_s for a in answers})  # one entry per batch
    return {
        "task": task.name,
        "system": system.name,
        "system_fingerprint": system.fingerprint(),
        "n": len(examples),
        "seed": task.seed,
        "primary_metric": task.primary,
        "metrics": scored["metrics"],
        "by_category": scored["by_category"],
        "cost": {
            "wall_s": round(wall_s, 3),
            "load_s": round(load_s, 3),
            "generated": generated,
            "cached": len(examples) - generated,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_per_example": round(prompt_tokens / max(len(examples), 1), 1),
            "tokens_per_s": round(completion_tokens / gen_time, 2) if gen_time > 0 else None,
            "latency_p50_s": latency.get("p50"),
            "latency_p90_s": latency.get("p90"),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
        },
        "_per_example": scored["per_example"],
    }


def _write_predictions(
    run: Run, examples: list[Example], answers: list[Answer], per_example: list[dict[str, float]]
) -> None:
    import json

    lines = []
    for ex, a, scores in zip(examples, answers, per_example, strict=True):
        row: dict[str, Any] = {
            "id": ex.id,
            "input": ex.text,
            "reference": ex.reference,
            "prediction": a.text,
            "scores": scores,
            "category": ex.category,
            "latency_s": round(a.latency_s, 4),
            "prompt_tokens": a.usage.prompt_tokens,
            "completion_tokens": a.usage.completion_tokens,
        }
        if a.raw != a.text:
            row["raw"] = a.raw  # the full completion (reasoning chain) the answer was extracted from
        if a.votes is not None:
            row["votes"], row["agreement"] = a.votes, a.agreement
        if a.sources is not None:
            row["sources"], row["citations"], row["abstained"] = a.sources, a.citations, a.abstained
        if a.probabilities is not None:
            row["probabilities"] = a.probabilities  # head Systems: calibrated probability per label
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(run.path / "predictions.jsonl", "\n".join(lines) + ("\n" if lines else ""))
