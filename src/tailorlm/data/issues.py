"""Validation issues: every problem in a data file, each with the file, the line and the field.

A loader never stops at the first problem. It records each one in an ``IssueLog`` and goes on, so that a user
fixes a file in one pass instead of one error per run. The printed form, ``file:line: field: message``, is the
one compilers use, so editors and terminals turn it into a link.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tailorlm.core.safe_text import printable

# Field names for problems that do not belong to one field of a record.
RECORD = "(record)"  # the whole record: bad JSON, not an object, too large, wrong column count
FILE = "(file)"  # the whole file: empty, unreadable, no records (line 0)
ENCODING = "(encoding)"  # bytes that are not UTF-8

DEFAULT_MAX_ISSUES = 1000

# Tags of the discriminated unions in ``records.py``; pydantic puts them in error locations, users never see them.
_UNION_TAGS = frozenset({"str", "int", "list", "none"})


@dataclass(frozen=True)
class Issue:
    """One problem: ``path:line: field: message``.

    ``line`` is 1-based: the physical line in JSONL/CSV files, the line where the object starts in JSON list
    files, and row index + 1 in Parquet files. ``line == 0`` means the file as a whole. ``field`` is a dotted
    path into the record as written in the file (``messages[2].role``), or ``(record)``/``(file)``/``(encoding)``.
    """

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        # Field names and values come from the file: a newline or an ESC in them must not break the one-line
        # form or reach the terminal raw, so every control character is shown as an escape.
        return printable(f"{self.path}:{self.line}: {self.field}: {self.message}")


@dataclass
class IssueLog:
    """Collects issues; keeps the first ``max_issues`` but counts them all, so a huge broken file stays cheap."""

    max_issues: int = DEFAULT_MAX_ISSUES
    issues: list[Issue] = field(default_factory=list)
    count: int = 0

    def add(self, path: str, line: int, field_name: str, message: str) -> None:
        self.count += 1
        if len(self.issues) < self.max_issues:
            # A key can be the empty string ({"": 1}); show it as "" so the field part is never blank.
            self.issues.append(Issue(path, line, field_name or '""', message))

    def extend(self, path: str, line: int, problems: Iterable[tuple[str, str]]) -> None:
        for field_name, message in problems:
            self.add(path, line, field_name, message)

    def __bool__(self) -> bool:
        return self.count > 0


def format_loc(loc: Iterable[str | int]) -> str:
    """``("messages", 2, "role")`` → ``messages[2].role``; union tags are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in _UNION_TAGS:
            out += f".{part}" if out else part
    return out or RECORD


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), f"a {type(value).__name__}"
    )


def pydantic_problems(err: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into ``(field, message)`` pairs worded for people who edit data files."""
    problems = []
    for e in err.errors(include_url=False):
        kind, msg = e["type"], e["msg"]
        if kind == "missing":
            msg = "missing required field"
        elif kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "literal_error":
            msg = f"got {e['input']!r}, expected {e.get('ctx', {}).get('expected', 'a listed value')}"
        elif kind.endswith("_type") or kind in {"invalid_union", "union_tag_invalid"}:
            msg = f"{msg}, got {_describe(e['input'])}"
        problems.append((format_loc(e["loc"]), msg))
    return problems


_HEAD = re.compile(r"^[^.\[]+")


def rename_fields(problems: Iterable[tuple[str, str]], renamed: Mapping[str, str]) -> list[tuple[str, str]]:
    """Report fields under the user's column names (``answer``), not the canonical ones (``reference``)."""
    if not renamed:
        return list(problems)
    return [(_HEAD.sub(lambda m: renamed.get(m.group(0), m.group(0)), f, count=1), msg) for f, msg in problems]
