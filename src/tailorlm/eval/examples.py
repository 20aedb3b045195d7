"""Turn a Task's eval set into examples: an id, the user's question text, the reference and a category."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from tailorlm.core.task import DataSpec, Task
from tailorlm.data import Dataset, EvalRecord, load_dataset
from tailorlm.prompting.program import render_template


@dataclass
class Example:
    id: str
    text: str  # the user's question as the System receives it (task template applied)
    reference: str | list[str] | None
    category: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


def render_input(template: str | None, record: EvalRecord) -> str:
    if template is None:
        return record.input
    variables = {**record.metadata, "input": record.input, "context": record.context, "reference": record.reference}
    return render_template(template, variables, what="task input_template")


def load_records(task: Task, spec: DataSpec | None = None) -> tuple[list[EvalRecord], Dataset]:
    """Load and validate the eval set; shuffle with ``shuffle_seed`` and cut to ``limit`` if asked.

    Returns the records used and the whole validated dataset (whose fingerprint the run records).
    """
    spec = spec or task.eval
    options = {f"{key}_field": column for key, column in spec.fields.items()}
    dataset = load_dataset(task.resolve(spec.path), spec.format, kind="eval", extra="metadata", **options)  # type: ignore[arg-type]
    records = list(dataset.records)
    if spec.shuffle_seed is not None:
        random.Random(spec.shuffle_seed).shuffle(records)
    return (records[: spec.limit] if spec.limit else records), dataset


def _example_id(record: EvalRecord, index: int) -> str:
    explicit = record.metadata.get("id")
    if explicit is not None:
        return str(explicit)
    # No id in the data: hash the input so that ids stay stable when the file is reordered or extended.
    digest = hashlib.sha256(f"{record.input}\x00{record.context}".encode()).hexdigest()[:12]
    return f"{index}-{digest}"


def build_examples(task: Task, limit: int | None = None) -> tuple[list[Example], Dataset]:
    records, dataset = load_records(task)
    if limit:
        records = records[:limit]
    examples = []
    for i, record in enumerate(records):
        category = record.metadata.get(task.category_field) if task.category_field else None
        examples.append(
            Example(
                id=_example_id(record, i),
                text=render_input(task.input_template, record),
                reference=record.reference,
                category=None if category is None else str(category),
                record=record.model_dump(mode="json"),
            )
        )
    return examples, dataset
