"""Task: what "good" means for one use case, read from ``task.yaml``.

    name: xquad-gold
    eval:
      path: eval.jsonl                 # any loader format; validated, errors name file:line:field
      fields: {input: question, reference: answers}
      limit: 100
    input_template: "{{ context }}\\n\\nQuestion: {{ input }}"
    metrics: [exact_match, f1]
    generation: {max_new_tokens: 32}
    canaries: {enabled: true, max_drop: 0.05}

Relative paths are resolved against the folder that holds ``task.yaml``, so a task folder can be moved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from tailorlm.core.config import StrictModel, load_config
from tailorlm.ladder.config import LadderConfig
from tailorlm.models.engines.base import GenerationParams


class DataSpec(StrictModel):
    """A dataset file plus how to read it."""

    path: str = Field(description="File or folder, relative to task.yaml.")
    format: str | None = Field(None, description="Loader format; None detects it (see `tailor data formats`).")
    fields: dict[str, str] = Field(
        default_factory=dict, description="Canonical key -> column, e.g. {input: question, reference: answer}."
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N records (after an optional shuffle).")
    shuffle_seed: int | None = Field(None, description="Shuffle with this seed before applying `limit`.")


class DocumentsSpec(StrictModel):
    """Knowledge documents for retrieval (used by the RAG rungs)."""

    path: str = Field(description="Folder or file of documents, relative to task.yaml.")
    include: list[str] = Field(default_factory=lambda: ["**/*"], description="Glob patterns to include.")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns to exclude.")


class CanarySpec(StrictModel):
    """General-capability canaries: scored before and after a change to catch forgetting."""

    enabled: bool = Field(False, description="Score the built-in canary suite for every evaluated System.")
    limit: int | None = Field(None, ge=1, description="Use only the first N canary items (faster, noisier).")
    max_drop: float | None = Field(
        None, ge=0, le=1, description="Largest allowed accuracy drop vs the base model; beyond it: not promotable."
    )


class TrainingCanarySpec(CanarySpec):
    """Canaries of a training recipe: on by default with a 2-point allowed drop. Defaults live on the class (not a
    ``default_factory``) so that a dotted override of one field, e.g. ``canaries.limit=20``, keeps the others."""

    enabled: bool = Field(True, description="Score the canaries on the starting and the trained weights.")
    max_drop: float | None = Field(0.02, ge=0, le=1, description="Largest allowed accuracy drop; beyond it: flagged.")


class BudgetSpec(StrictModel):
    """Limits a deployment must meet; reports flag Systems that exceed them."""

    latency_p50_s: float | None = Field(None, gt=0, description="Median seconds per answer.")
    memory_gb: float | None = Field(None, gt=0, description="Peak resident memory.")
    time_minutes: float | None = Field(None, gt=0, description="Wall-clock budget for building a System.")


class BootstrapSpec(StrictModel):
    resamples: int = Field(1000, ge=100, description="Bootstrap resamples for confidence intervals.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals.")


class Task(StrictModel):
    """What "good" means for one use case."""

    name: str = Field(description="Short name, used in run ids and reports.")
    description: str | None = Field(None, description="What the use case is, in a sentence.")
    eval: DataSpec = Field(description="The eval set: inputs with references.")
    input_template: str | None = Field(
        None,
        description="Jinja template turning a record into the user's question; variables: input, context, and "
        "the record's metadata fields. None sends the input as is.",
    )
    metrics: list[str] = Field(default_factory=lambda: ["exact_match", "f1"], min_length=1)
    primary_metric: str | None = Field(None, description="Metric that ranks Systems; default: the first metric.")
    category_field: str | None = Field(None, description="Metadata field to break results down by.")
    generation: GenerationParams = Field(
        default_factory=lambda: GenerationParams(max_new_tokens=64), description="Decoding for this task."
    )
    train: DataSpec | None = Field(None, description="Optional training data (chat, Alpaca, …).")
    preference: DataSpec | None = Field(None, description="Optional preference pairs (prompt/chosen/rejected).")
    documents: DocumentsSpec | None = Field(None, description="Optional knowledge documents for retrieval.")
    canaries: CanarySpec = Field(default_factory=CanarySpec)
    budgets: BudgetSpec = Field(default_factory=BudgetSpec)
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec)
    ladder: LadderConfig = Field(default_factory=LadderConfig, description="What `tailor ladder` runs (optional).")
    seed: int = Field(0, description="Seed for shuffles, bootstrap resampling and sampling.")
    base_dir: str | None = Field(None, description="Set on load: the folder of task.yaml (paths resolve here).")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        from tailorlm.eval.metrics import get_metric

        for name in names:
            get_metric(name)  # raises ConfigError with the closest valid name
        return names

    @property
    def primary(self) -> str:
        return self.primary_metric or self.metrics[0]

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir or ".") / p

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Task:
        path = Path(path)
        base = {"base_dir": os.path.normpath(path.parent.absolute())}
        return load_config(cls, path, overrides, base=base)

    def fingerprint_data(self) -> dict[str, Any]:
        """What determines eval results besides the System: used in cache keys."""
        return self.model_dump(mode="json", include={"eval", "input_template", "metrics", "generation", "seed"})
