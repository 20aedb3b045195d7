"""What one rung of the ladder produced: ``rungs/<name>/result.json``, written last and atomically.

A rung's result is the unit of caching and of resuming: it exists only when the rung finished (or failed), and it
carries the content key it was built for, so an unchanged rung is reused and a changed one is rebuilt. The report,
the recommendation and ``ladder.json`` read nothing else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

RungStatus = Literal["complete", "failed", "skipped"]


class Quality(BaseModel):
    """One metric of a rung's eval run, with its bootstrap confidence interval."""

    metric: str
    value: float
    low: float | None = None
    high: float | None = None
    n: int = Field(0, description="Examples scored.")


class Paired(BaseModel):
    """``rung - other`` on the shared eval examples (paired bootstrap); positive means the rung scored higher."""

    other: str = Field(description="The rung compared against.")
    diff: float
    low: float
    high: float
    p_value: float | None = None

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


class BuildCost(BaseModel):
    """What building the System cost (shared work, such as the index, is counted in every rung that uses it)."""

    wall_s: float = Field(0.0, description="Seconds to build the System (index, training, prompt search).")
    tokens: int = Field(0, description="Tokens processed while building (training tokens, search generations).")
    peak_rss_mb: float | None = Field(None, description="Peak resident memory while building and evaluating.")
    disk_mb: float = Field(0.0, description="Disk size of the artifacts the System needs (adapter, index).")
    detail: dict[str, float] = Field(default_factory=dict, description="Seconds per part, e.g. {index: 7.1}.")


class ServeCost(BaseModel):
    """What answering costs, measured on the eval run."""

    latency_p50_s: float | None = Field(None, description="Median seconds per answer (its batch's wall time).")
    tokens_per_s: float | None = Field(None, description="Completion tokens per second of generation.")
    prompt_tokens_per_query: float | None = Field(
        None, description="Prompt tokens per question (RAG and few-shot grow it)."
    )
    eval_wall_s: float | None = Field(None, description="Seconds the eval run took.")
    engine: str | None = Field(None, description="The engine that answered (hf, ct2, …), as metrics.json records it.")


class Estimate(BaseModel):
    """The plan's estimate for a rung on this machine (``tailor ladder --plan``)."""

    build_s: float
    eval_s: float
    peak_rss_mb: float | None = None
    basis: str = Field("", description="How it was worked out, in a few words.")
    dominant: str | None = Field(
        None, description="What dominates the eval time and the setting that cuts it (e.g. max_new_tokens)."
    )

    @property
    def total_s(self) -> float:
        return self.build_s + self.eval_s


class RungResult(BaseModel):
    name: str = Field(description="Rung id, e.g. rag-lora.")
    title: str = Field(description="What the rung is, for people: 'RAG + LoRA (RAFT)'.")
    family: str = Field(description="prompting, rag, fine-tuning, …: the step of the ladder it belongs to.")
    status: RungStatus
    key: str = Field("", description="Content key (task, data, config, code version) the rung was built for.")
    cached: bool = Field(False, description="Reused from an earlier ladder run (set when read back).")
    reason: str | None = Field(None, description="Why the rung was skipped.")
    error: str | None = Field(None, description="Why the rung failed: the error's message.")
    system: str | None = Field(None, description="Path of the rung's system.yaml.")
    eval_run: str | None = Field(None, description="Path of the rung's eval run (metrics.json, predictions.jsonl).")
    build_runs: list[str] = Field(default_factory=list, description="Paths of the runs that built the System.")
    quality: Quality | None = Field(None, description="The task's primary metric.")
    metrics: dict[str, Quality] = Field(default_factory=dict, description="Every metric of the task.")
    vs_baseline: Paired | None = Field(None, description="Primary metric minus the baseline rung's (zero-shot).")
    build: BuildCost | None = None
    serve: ServeCost | None = None
    canaries: dict[str, Any] | None = Field(None, description="Forgetting canaries: before, after, drop, promotable.")
    estimate: Estimate | None = None
    actual_s: float | None = Field(None, description="Seconds the rung took in the run that built it.")
    notes: list[str] = Field(default_factory=list, description="Things the report should say about this rung.")

    @property
    def ok(self) -> bool:
        return self.status == "complete" and self.quality is not None
