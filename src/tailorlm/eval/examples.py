"""Turn a Task's eval set into examples: an id, the user's question text, the reference and a category."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jinja2

from tailorlm.core.task import DataSpec, Task
from tailorlm.data import EvalRecord, load_dataset
from tailorlm.errors import ConfigError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass
class Example:
    id: str
    text: str  # the user's question as the System receives it (task template applied)
    reference: str | list[str] | None
    category: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=16)
def _template(source: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise ConfigError(f"task input_template: syntax error on line {err.lineno}: {err.message}") from err


def render_input(template: str | None, record: EvalRecord) -> str:
    if template is None:
        return record.input
    variables = {**record.metadata, "input": record.input, "context": record.context, "reference": record.reference}
    try:
        return _template(template).render(**variables)
    except jinja2.UndefinedError as err:
        raise ConfigError(
            f"task input_template uses a variable the eval records do not have: {err.message}",
            hint=f"available: {', '.join(sorted(variables))}",
        ) from err


def load_records(task: Task, spec: DataSpec | None = None) -> list[EvalRecord]:
    """Load and validate the eval set; shuffle with ``shuffle_seed`` and cut to ``limit`` if asked."""
    spec = spec or task.eval
    options = {f"{key}_field": column for key, column in spec.fields.items()}
    dataset = load_dataset(task.resolve(spec.path), spec.format, kind="eval", extra="metadata", **options)  # type: ignore[arg-type]
    records = list(dataset.records)
    if spec.shuffle_seed is not None:
        random.Random(spec.shuffle_seed).shuffle(records)
    return records[: spec.limit] if spec.limit else records


def _example_id(record: EvalRecord, index: int) -> str:
    explicit = record.metadata.get("id")
    if explicit is not None:
        return str(explicit)
    # No id in the data: hash the input so that ids stay stable when the file is reordered or extended.
    digest = hashlib.sha256(f"{record.input}\x00{record.context}".encode()).hexdigest()[:12]
    return f"{index}-{digest}"


def build_examples(task: Task, limit: int | None = None) -> list[Example]:
    records = load_records(task)
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
    return examples
