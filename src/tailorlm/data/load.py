"""``load_dataset`` and ``Dataset``: read a file, detect its format, validate every row, keep canonical records.

The steps read top to bottom in ``load_dataset``: find the container (from the suffix) → read raw rows →
rename user columns (``input_field="question"``) → detect the format (or take the override) → convert each
row to a canonical dict → validate it → collect the records and every issue. A file with issues raises one
``DataError`` listing them all, unless ``strict=False``, which keeps the valid records and the issues.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from tailorlm.core.io import sha256_file
from tailorlm.data.formats import (
    FORMAT_NAMES,
    FORMATS,
    Context,
    Extra,
    FormatName,
    FormatSpec,
    detect_format,
    to_canonical,
)
from tailorlm.data.issues import DEFAULT_MAX_ISSUES, FILE, Issue, IssueLog, rename_fields
from tailorlm.data.readers import TEXT_SUFFIXES, Container, Row, TextUnit, container_for, read_rows
from tailorlm.data.records import KINDS, RECORD_TYPES, Kind, record_to_dict, validate_record
from tailorlm.data.split import record_id, split_indices
from tailorlm.errors import DataError

DEFAULT_MAX_RECORD_BYTES = 1_000_000
_FINGERPRINT_VERSION = "tailorlm.dataset/v1"
# Every canonical key a ``<key>_field=`` option may map a user column onto.
FIELD_TARGETS = frozenset(k for spec in FORMATS.values() for k in spec.keys)


class Dataset:
    """Canonical records of one kind, plus where they came from. Immutable by convention: methods return new ones.

    ``fingerprint`` hashes the canonical records (not the file bytes), so the same conversations stored as
    OpenAI JSONL or as ShareGPT have the same fingerprint; ``content_sha256`` hashes the source bytes.
    """

    def __init__(
        self,
        records: list[Any],
        *,
        kind: Kind,
        format: FormatName | None = None,
        source: Path | None = None,
        content_sha256: str | None = None,
        issues: list[Issue] | None = None,
        issue_count: int = 0,
    ) -> None:
        record_type = RECORD_TYPES[kind]
        if not all(isinstance(r, record_type) for r in records):
            raise TypeError(f"every record of a {kind} dataset must be a {record_type.__name__}")
        self.records = records
        self.kind = kind
        self.format = format
        self.source = source
        self.content_sha256 = content_sha256
        self.issues = list(issues or [])  # only non-empty for strict=False loads
        self.issue_count = issue_count or len(self.issues)

    @classmethod
    def from_dicts(cls, rows: list[dict[str, Any]], kind: Kind, *, require_assistant: bool = True) -> Dataset:
        """Validate canonical dicts (e.g. collected feedback); issues name the row as ``<memory>:index+1``."""
        log, records = IssueLog(), []
        for i, row in enumerate(rows, start=1):
            record, problems = validate_record(kind, row, require_assistant=require_assistant)
            log.extend("<memory>", i, problems)
            if record is not None:
                records.append(record)
        if log:
            raise DataError(f"{log.count} problem(s) in {kind} records", issues=log.issues)
        return cls(records, kind=kind)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Any:
        return self.records[index]

    def __repr__(self) -> str:
        src = f", source={str(self.source)!r}" if self.source else ""
        return f"Dataset(kind={self.kind!r}, format={self.format!r}, records={len(self)}{src})"

    @cached_property
    def _record_json(self) -> list[str]:
        # Sorted keys and no whitespace: one byte string per record whatever dict order the loader produced.
        return [
            json.dumps(record_to_dict(r), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            for r in self.records
        ]

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the kind and the canonical records, in order: stable across runs and source formats."""
        h = hashlib.sha256(f"{_FINGERPRINT_VERSION}\n{self.kind}\n".encode())
        for line in self._record_json:
            h.update(line.encode("utf-8") + b"\n")
        return h.hexdigest()

    @property
    def label_names(self) -> list[str]:
        """Classification only: the sorted distinct labels (ints numerically, then names), as strings."""
        if self.kind != "classification":
            raise TypeError(f"label_names is for classification datasets, this one is {self.kind}")
        labels = {r.label for r in self.records}
        return [str(x) for x in sorted(labels, key=lambda x: (isinstance(x, str), x))]

    def _subset(self, indices: list[int]) -> Dataset:
        return Dataset(
            [self.records[i] for i in indices],
            kind=self.kind,
            format=self.format,
            source=self.source,
            content_sha256=self.content_sha256,
        )

    def split(
        self, eval_fraction: float | None = None, *, eval_size: int | None = None, seed: int = 0
    ) -> tuple[Dataset, Dataset]:
        """``(train, eval)``: the same seed gives the same split; each side keeps the original order.

        Augmented records (``metadata.augmented.source_id``) go to train only, and only when their source did:
        the augmentations of an eval record are dropped, so no paraphrase of an eval answer is trained on.
        """
        sources = self.augmented_sources
        train, held_out = split_indices(
            self._record_json,
            eval_fraction=eval_fraction,
            eval_size=eval_size,
            seed=seed,
            sources=sources if any(sources) else None,
        )
        dropped = len(self) - len(train) - len(held_out)
        if dropped:
            logging.getLogger("tailorlm.data").info("split: %d augmented records of eval records left out", dropped)
        return self._subset(train), self._subset(held_out)

    @property
    def record_ids(self) -> list[str]:
        """A short content id per record (what augmented records name as ``source_id``)."""
        return [record_id(key) for key in self._record_json]

    @property
    def augmented_sources(self) -> list[str | None]:
        """Per record: the ``source_id`` of an augmented record, None for an original."""
        out: list[str | None] = []
        for r in self.records:
            tag = (getattr(r, "metadata", None) or {}).get("augmented")
            out.append(str(tag["source_id"]) if isinstance(tag, dict) and tag.get("source_id") else None)
        return out

    def to_dicts(self) -> list[dict[str, Any]]:
        """Canonical dicts, with unset optional fields left out."""
        return [record_to_dict(r) for r in self.records]

    def to_hf(self) -> Any:
        """A ``datasets.Dataset`` with one row per record (e.g. ``messages`` for chat, as TRL expects)."""
        import datasets

        rows = self.to_dicts()
        # ``from_list`` takes its columns from the first row only; give every row every top-level key.
        columns = list(dict.fromkeys(chain.from_iterable(rows))) or list(RECORD_TYPES[self.kind].model_fields)
        return datasets.Dataset.from_list([{c: row.get(c) for c in columns} for row in rows])

    def summary(self) -> dict[str, Any]:
        """The facts a run records about its data: source, format, kind, size and hashes."""
        out: dict[str, Any] = {
            "path": str(self.source) if self.source else None,
            "format": self.format,
            "kind": self.kind,
            "records": len(self),
            "fingerprint": self.fingerprint,
            "content_sha256": self.content_sha256,
        }
        if self.kind == "classification":
            out["labels"] = len(self.label_names)
        return out


def _content_hash(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    # A folder: hash each text file's relative path and content hash, in sorted order.
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        h.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return h.hexdigest()


def _field_map(field_options: dict[str, Any]) -> dict[str, str]:
    """``{"input_field": "question"}`` → ``{"question": "input"}`` (user column → canonical key)."""
    mapping = {}
    for option, column in field_options.items():
        target = option.removesuffix("_field")
        if not option.endswith("_field") or target not in FIELD_TARGETS:
            valid = ", ".join(f"{t}_field" for t in sorted(FIELD_TARGETS))
            raise DataError(f"unknown load option {option!r}", hint=f"field options are: {valid}")
        if not isinstance(column, str) or not column:
            raise DataError(f"{option} must name a column, got {column!r}")
        mapping[column] = target
    return mapping


def _check_choices(format: str | None, kind: str | None, extra: str, text_unit: str) -> None:
    for name, value, choices in (
        ("format", format, FORMAT_NAMES),
        ("kind", kind, KINDS),
        ("extra", extra, get_args(Extra)),
        ("text_unit", text_unit, get_args(TextUnit)),
    ):
        if value is not None and value not in choices:
            raise DataError(f"unknown {name} {value!r}", hint=f"choose one of: {', '.join(choices)}")
    if format and kind and FORMATS[format].kind != kind:  # type: ignore[index]
        raise DataError(f"format {format!r} holds {FORMATS[format].kind} records, not {kind}")  # type: ignore[index]


def load_dataset(
    path: str | Path,
    format: FormatName | None = None,
    *,
    kind: Kind | None = None,
    strict: bool = True,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    extra: Extra = "forbid",
    require_assistant: bool = True,
    columns: list[str] | None = None,
    text_unit: TextUnit = "file",
    max_issues: int = DEFAULT_MAX_ISSUES,
    **field_options: str,
) -> Dataset:
    """Load and validate a dataset file (or a folder of ``.txt``/``.md`` files) into canonical records.

    Args:
        path: ``.jsonl``/``.ndjson`` (optionally ``.gz``), ``.json`` (a list of objects, or JSON Lines),
            ``.csv``, ``.tsv``, ``.parquet``, ``.txt``/``.md``, or a folder of text files.
        format: one of ``FORMAT_NAMES``; ``None`` detects it from the keys (see ``formats.detect_format``).
        kind: restrict detection to formats of this kind, or check that ``format`` produces it.
        strict: raise a ``DataError`` with every issue if any record is bad; with ``False`` return the
            valid records, and the issues in ``dataset.issues``.
        max_record_bytes: a record (line, object, row) larger than this is an issue, not a memory spike.
        extra: unknown keys are an issue (``"forbid"``), dropped (``"ignore"``), or kept in ``metadata``
            (``"metadata"``, eval only).
        require_assistant: a chat without an assistant turn is an issue (right for training data).
        columns: column names for a CSV/TSV file that has no header row.
        text_unit: for text files: one record per ``"file"``, ``"paragraph"`` (blank-line separated) or ``"line"``.
        max_issues: how many issues to keep (all are counted).
        **field_options: ``<key>_field=<column>`` maps a column onto a canonical key, e.g.
            ``input_field="question", reference_field="answer"``.
    """
    path = Path(path)
    _check_choices(format, kind, extra, text_unit)
    renames = _field_map(field_options)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    container = container_for(path)
    if container is None:
        raise DataError(
            f"{path}: unknown file type {''.join(path.suffixes) or '(no suffix)'}",
            hint="supported: .jsonl, .ndjson, .json, .csv, .tsv, .parquet, .txt, .md (each optionally .gz), "
            "or a folder of .txt/.md files",
        )
    if container == "text" and format not in (None, "text"):
        raise DataError(f"{path}: plain-text files hold text records, not the {format} format")

    log = IssueLog(max_issues=max_issues)
    rows = read_rows(path, container, log, max_record_bytes=max_record_bytes, columns=columns, text_unit=text_unit)
    rows = (Row(r.path, r.line, {renames.get(k, k): v for k, v in r.data.items()}, r.typed) for r in rows)
    first = next(rows, None)
    if format is None:
        format = "text" if container == "text" else None
        if format is None and first is not None:
            headerless = container in ("csv", "tsv") and not columns
            format = detect_format(first.data.keys(), source=str(path), kind=kind, headerless_hint=headerless)
    spec = FORMATS[format] if format else None
    if spec is not None and kind is not None and spec.kind != kind:  # e.g. kind="chat" for a folder of text
        raise DataError(f"{path} holds {spec.kind} records ({spec.name} format), not {kind}")
    if spec is not None and extra == "metadata" and spec.kind != "eval":
        raise DataError(f'{path}: extra="metadata" is only for eval data, not {spec.name}', hint='use extra="ignore"')

    records = []
    if spec is not None and first is not None:
        # Problems are reported under the user's own names: their column, and ``conversations`` for ShareGPT.
        back = {v: k for k, v in renames.items()} | ({"messages": "conversations"} if spec.name == "sharegpt" else {})
        records = _convert_rows(
            chain([first], rows), spec, _container_context(container, extra), log, back, require_assistant
        )
    if not records and not log:
        log.add(str(path), 0, FILE, "no records" + (" (only a header row)" if container in ("csv", "tsv") else ""))
    if log and strict:
        shown = f"; the first {len(log.issues)} are listed" if log.count > len(log.issues) else ""
        unknown = any(i.message.startswith("unknown field") for i in log.issues)
        raise DataError(
            f"{path}: {log.count} problem(s) in {spec.name if spec else 'the'} data{shown}",
            issues=log.issues,
            hint='to drop unknown fields, pass extra="ignore" (CLI: --extra ignore)' if unknown else None,
        )
    return Dataset(
        records,
        kind=spec.kind if spec else (kind or "text"),
        format=spec.name if spec else format,
        source=path,
        content_sha256=_content_hash(path),
        issues=log.issues,
        issue_count=log.count,
    )


def _container_context(container: Container, extra: Extra) -> Context:
    return Context(extra=extra, typed=container not in ("csv", "tsv"))


def _convert_rows(
    rows: Iterator[Row],
    spec: FormatSpec,
    ctx: Context,
    log: IssueLog,
    back: dict[str, str],
    require_assistant: bool,
) -> list[BaseModel]:
    records = []
    for row in rows:
        data, problems = to_canonical(spec, row.data, ctx)
        if data is not None:
            record, problems = validate_record(spec.kind, data, require_assistant=require_assistant)
            if record is not None:
                records.append(record)
        log.extend(row.path, row.line, rename_fields(problems, back))
    return records
