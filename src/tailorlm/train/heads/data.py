"""Texts and targets for a head: read through ``tailorlm.data``, labels turned into class ids.

Classification files load as canonical ``ClassificationRecord``s (``load_dataset``, which validates every row and
names file, line and field in its errors). Regression targets are numbers, which that record type does not hold,
so they are read with the same row readers and checked here, with errors in the same ``file:line: field`` form.

Labels: a class name must be one of ``labels``; an integer is the class of that name when ``labels`` has it (the
labels ``["1", "2", "3"]``), else a class id into ``labels`` (SST-2's 0/1 with ``[negative, positive]``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailorlm.data import IssueLog, load_dataset
from tailorlm.data.load import DEFAULT_MAX_RECORD_BYTES
from tailorlm.data.readers import container_for, read_rows
from tailorlm.errors import DataError
from tailorlm.train.heads.config import HeadData, Problem


@dataclass
class Examples:
    """Texts with their raw targets (class names/ids, or numbers), and where they came from."""

    texts: list[str]
    targets: list[Any]
    source: str
    fingerprint: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int]) -> Examples:
        return Examples(
            [self.texts[i] for i in indices], [self.targets[i] for i in indices], self.source, self.fingerprint
        )

    def split(self, fraction: float, seed: int) -> tuple[Examples, Examples]:
        """``(train, held_out)``: a seeded shuffle, ``fraction`` of it held out; each side keeps the file order."""
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_out = max(1, round(fraction * len(self)))
        return self.subset(sorted(order[n_out:])), self.subset(sorted(order[:n_out]))


def _check_fields(spec: HeadData, where: str) -> None:
    """A missing text or label column is one clear error naming the file and the field, not one issue per row."""
    path = Path(spec.path)
    container = container_for(path) if path.exists() else None
    if container is None:
        return  # load_dataset explains a missing file or an unknown suffix
    first = next(
        read_rows(path, container, IssueLog(), max_record_bytes=DEFAULT_MAX_RECORD_BYTES, columns=spec.columns)
    )
    for option, column in (("text_field", spec.text_field), ("label_field", spec.label_field)):
        if column not in first.data:
            found = ", ".join(repr(k) for k in first.data) or "none"
            raise DataError(
                f"{path}: no column {column!r} for {where}.{option}; the file's columns are {found}",
                hint=f"set {where}.{option} to one of them; a CSV/TSV file without a header row needs "
                f"{where}.columns, e.g. [text, label]",
            )


def load_examples(spec: HeadData, problem: Problem, where: str = "data", seed: int = 0) -> Examples:
    """Read ``spec`` (a classification or regression file); ``spec.limit`` keeps a seeded random sample."""
    _check_fields(spec, where)
    if problem == "classification":
        renames = {f"{k}_field": v for k, v in (("text", spec.text_field), ("label", spec.label_field)) if k != v}
        ds = load_dataset(spec.path, "classification", columns=spec.columns, extra="ignore", **renames)
        examples = Examples([r.text for r in ds], [r.label for r in ds], str(ds.source), ds.fingerprint)
    else:
        examples = _load_numbers(spec)
    if spec.limit is not None and spec.limit < len(examples):
        examples = examples.subset(sorted(random.Random(seed).sample(range(len(examples)), spec.limit)))
    return examples


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None  # ``true`` as a regression target is a mistake, not 1.0
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _load_numbers(spec: HeadData) -> Examples:
    path = Path(spec.path)
    container = container_for(path) if path.exists() else None
    if container is None or container == "text":
        raise DataError(f"{path}: not a readable data file", hint="regression data: JSONL, JSON, CSV, TSV or Parquet")
    log, texts, targets = IssueLog(), [], []
    for row in read_rows(path, container, log, max_record_bytes=DEFAULT_MAX_RECORD_BYTES, columns=spec.columns):
        text, value = row.data.get(spec.text_field), _number(row.data.get(spec.label_field))
        problems = []
        if not isinstance(text, str) or not text.strip():
            problems.append((spec.text_field, "expected a non-empty text"))
        if value is None:
            problems.append((spec.label_field, f"expected a finite number, got {row.data.get(spec.label_field)!r}"))
        log.extend(row.path, row.line, problems)
        if not problems:
            texts.append(text)
            targets.append(value)
    if log or not texts:
        raise DataError(f"{path}: {log.count or 'no'} problem(s) in the regression data", issues=log.issues)
    digest = hashlib.sha256(json.dumps([texts, targets], ensure_ascii=False).encode("utf-8")).hexdigest()
    return Examples(texts, targets, str(path), digest)


# --- labels -------------------------------------------------------------------------------------------------


def infer_labels(targets: list[Any]) -> list[str]:
    """Class names from the data: sorted integers first (as strings), then sorted names."""
    distinct = sorted(set(targets), key=lambda x: (isinstance(x, str), x))
    names = list(dict.fromkeys(str(x) for x in distinct))
    if len(names) < 2:
        raise DataError(f"the training data has only one class ({names})", hint="a classifier needs two or more")
    return names


def label_ids(examples: Examples, labels: list[str], where: str) -> list[int]:
    """Each target as a class id into ``labels``; one error lists the records whose label is not a class."""
    index = {name: i for i, name in enumerate(labels)}
    ids, bad = [], []
    for n, target in enumerate(examples.targets, start=1):
        if str(target) in index:
            ids.append(index[str(target)])
        elif isinstance(target, int) and 0 <= target < len(labels):
            ids.append(target)
        else:
            bad.append(f"record {n}: {target!r}")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(
            f"{examples.source}: {len(bad)} {where} label(s) are not among the classes {labels}: {shown}",
            hint="set labels: [...] in the recipe (integer labels are class ids into it), or fix the label field",
        )
    return ids
