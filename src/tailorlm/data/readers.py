"""Readers: turn a file into raw rows ``(path, line, dict)`` and log every problem on the way.

A reader knows containers (JSONL, JSON list, CSV/TSV, Parquet, plain text), not schemas: which keys a row
must have is ``formats.py``'s business. Each reader works on bytes and decodes one line (or one object) at a
time, so one bad byte, one broken row or one oversized record costs that record, not the file, and its
issue names the line it is on.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tailorlm.data.issues import ENCODING, FILE, RECORD, Issue, IssueLog
from tailorlm.errors import DataError

Container = Literal["jsonl", "json", "csv", "tsv", "parquet", "text"]
TextUnit = Literal["file", "paragraph", "line"]

_SUFFIXES: dict[str, Container] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".md": "text",
}
TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class Row:
    """One raw record. ``typed`` is False for CSV/TSV, whose cells are all strings."""

    path: str
    line: int
    data: dict[str, Any]
    typed: bool = True


def container_for(path: Path) -> Container | None:
    """The container a path holds, from its suffix (``.gz`` is looked through); a folder holds text files."""
    if path.is_dir():
        return "text"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return _SUFFIXES.get(suffixes[-1]) if suffixes else None


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix.lower() != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:  # not gzip, truncated, or a bad checksum: the whole file is lost
        issue = Issue(str(path), 0, FILE, f"not a readable gzip file: {err}")
        raise DataError(f"{path}: 1 problem(s) in the data", issues=[issue]) from None


# A ``\udXXX`` escape: JSON allows a lone UTF-16 surrogate, which is not Unicode and breaks every later encode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONProblem(ValueError):
    """Valid JSON syntax that Python cannot hold safely: too deep, a giant integer, a lone surrogate."""


def check_json_value(value: Any, text: str) -> Any:
    """Refuse a parsed value with a lone surrogate (only looked for when ``text`` has a ``\\udXXX`` escape)."""
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JSONProblem("a lone UTF-16 surrogate escape (\\ud800-\\udfff) is not valid Unicode") from None
    return value


def parse_json(text: str) -> Any:
    """``json.loads`` for untrusted text: ``JSONDecodeError`` for bad syntax, ``JSONProblem`` for the rest.

    The other ways ``json.loads`` fails on hostile input are a ``RecursionError`` (``[[[[...``, nested deeper
    than the interpreter's stack) and a ``ValueError`` for integers over 4,300 digits (CPython's guard against
    quadratic int parsing); both become a ``JSONProblem`` the caller reports as an issue at the record's line.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise JSONProblem("nested too deeply") from None
    except ValueError as err:
        raise JSONProblem(str(err).split(";")[0]) from None
    return check_json_value(value, text)


def _decode(raw: bytes, path: str, line: int, log: IssueLog) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        log.add(path, line, ENCODING, f"not valid UTF-8: byte 0x{raw[err.start]:02x} at column {err.start + 1}")
        return None


def _too_big(size: int, limit: int, path: str, line: int, log: IssueLog) -> bool:
    if size > limit:
        log.add(path, line, RECORD, f"record is {size:,} bytes, over the limit of {limit:,} (max_record_bytes)")
        return True
    return False


def _as_object(value: Any, path: str, line: int, log: IssueLog) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    log.add(path, line, RECORD, f"expected a JSON object, got {type(value).__name__}")
    return None


def read_jsonl(path: Path, log: IssueLog, *, max_record_bytes: int, data: bytes | None = None) -> Iterator[Row]:
    """One JSON object per line. Blank lines are skipped; every other bad line is an issue at its line."""
    name = str(path)
    data = _read_bytes(path) if data is None else data
    for line, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        if _too_big(len(raw), max_record_bytes, name, line, log):
            continue
        text = _decode(raw, name, line, log)
        if text is None:
            continue
        if line == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark from Windows editors is not an error
        try:
            value = parse_json(text)
        except json.JSONDecodeError as err:
            log.add(name, line, RECORD, f"invalid JSON: {err.msg} (column {err.colno})")
            continue
        except JSONProblem as err:
            log.add(name, line, RECORD, f"invalid JSON: {err}")
            continue
        if (obj := _as_object(value, name, line, log)) is not None:
            yield Row(name, line, obj)


# Where the next object of a pretty-printed list probably starts, after a broken one: ``},`` then ``{``.
_RESUME = re.compile(r"\}\s*,\s*(?=\{)")


def read_json(path: Path, log: IssueLog, *, max_record_bytes: int) -> Iterator[Row]:
    """A top-level JSON list of objects (Alpaca style). Each row's line is the line where its object starts.

    A ``.json`` file whose first character is ``{`` is read as JSON Lines, because many datasets name JSONL
    files ``.json``. After a syntax error we resume at the next ``},{`` boundary (best effort), so one broken
    object does not hide the problems in the rest of the file.
    """
    name = str(path)
    data = _read_bytes(path)
    if data.lstrip().startswith(b"{"):
        try:  # one object for the whole file (e.g. SQuAD): not a list of records, so say so clearly
            whole = json.loads(data)
        except (ValueError, RecursionError):  # "Extra data" after the first object (JSON Lines), or worse
            yield from read_jsonl(path, log, max_record_bytes=max_record_bytes, data=data)
            return
        keys = ", ".join(list(whole)[:10]) if isinstance(whole, dict) else ""
        log.add(name, 1, RECORD, f"expected a JSON list of objects or JSON Lines, got one object (keys: {keys})")
        return
    # Decode line by line first: the issue names each line with bad bytes, and objects on them are dropped.
    bad_lines = set()
    for line, raw in enumerate(data.split(b"\n"), start=1):
        if _decode(raw, name, line, log) is None:
            bad_lines.add(line)
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("[", pos):
        log.add(name, text.count("\n", 0, pos) + 1, RECORD, "expected a JSON list of objects or JSON Lines")
        return
    pos = ws.match(text, pos + 1).end()  # type: ignore[union-attr]
    line, counted = 1, 0  # line number of ``counted``: lines are counted incrementally, keeping this O(n)
    if text.startswith("]", pos):
        return
    while pos < len(text):
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, end = decoder.raw_decode(text, pos)
            check_json_value(value, text[pos:end])
        except json.JSONDecodeError as err:
            log.add(name, err.lineno, RECORD, f"invalid JSON: {err.msg} (column {err.colno})")
            resume = _RESUME.search(text, err.pos)
            if resume is None:
                return
            pos = resume.end()
            continue
        except (ValueError, RecursionError) as err:  # see ``parse_json``: too deep, a giant int, a surrogate
            problem = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]
            log.add(name, line, RECORD, f"invalid JSON: {problem}")
            # The object's end is unknown, so resume after the next object boundary, as after a syntax error.
            resume = _RESUME.search(text, pos + 1)
            if resume is None:
                return
            pos = resume.end()
            continue
        end_line = line + text.count("\n", pos, end)
        ok = not bad_lines.intersection(range(line, end_line + 1))
        if ok and not _too_big(len(text[pos:end].encode("utf-8")), max_record_bytes, name, line, log):
            obj = _as_object(value, name, line, log)
            if obj is not None:
                yield Row(name, line, obj)
        pos = ws.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith(",", pos):
            pos = ws.match(text, pos + 1).end()  # type: ignore[union-attr]
        elif text.startswith("]", pos):
            return
        else:
            log.add(name, text.count("\n", 0, pos) + 1, RECORD, "invalid JSON: expected ',' or ']' after an object")
            return
    log.add(name, text.count("\n") + 1, RECORD, "invalid JSON: the list is not closed with ']'")


def read_csv(
    path: Path, log: IssueLog, *, delimiter: str, max_record_bytes: int, columns: list[str] | None = None
) -> Iterator[Row]:
    """CSV or TSV with a header row (or ``columns`` for a file without one). Lines are physical file lines.

    TSV is read without quote handling (the GLUE/SST convention: quotes are ordinary characters). A row that
    spans several lines (a quoted newline) reports the line it starts on.
    """
    name = str(path)
    raw_lines = _read_bytes(path).splitlines(keepends=True)
    bad_lines: set[int] = set()
    decoded = []
    for line, raw in enumerate(raw_lines, start=1):
        text = _decode(raw, name, line, log)
        if text is None:
            bad_lines.add(line)
            text = raw.decode("utf-8", errors="replace")
        decoded.append(text.removeprefix("\ufeff") if line == 1 else text)
    # The csv module refuses fields over 128 KiB by default; our own per-record limit is the one that counts.
    csv.field_size_limit(max(csv.field_size_limit(), max_record_bytes + 1))
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(iter(decoded), delimiter=delimiter, quoting=quoting)
    header = list(columns) if columns else None
    previous_end = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            log.add(name, reader.line_num, RECORD, f"malformed CSV: {err}")
            previous_end = reader.line_num
            continue
        start, end = previous_end + 1, reader.line_num
        previous_end = end
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        if bad_lines.intersection(range(start, end + 1)):
            continue  # already reported as an encoding issue
        if header is None:
            header = [c.strip() for c in cells]
            duplicates = sorted({c for c in header if header.count(c) > 1})
            if duplicates or not all(header):
                what = f"duplicate column names {duplicates}" if duplicates else "an empty column name"
                log.add(name, start, RECORD, f"header has {what}")
                return
            continue
        if len(cells) != len(header):
            log.add(name, start, RECORD, f"expected {len(header)} columns ({', '.join(header)}), found {len(cells)}")
            continue
        size = sum(len(raw_lines[i - 1]) for i in range(start, end + 1))
        if _too_big(size, max_record_bytes, name, start, log):
            continue
        yield Row(name, start, dict(zip(header, cells, strict=True)), typed=False)


def read_parquet(path: Path, log: IssueLog, *, max_record_bytes: int) -> Iterator[Row]:
    """Parquet rows; a row's "line" is its index + 1, since Parquet has no lines."""
    import pyarrow.parquet as pq

    name = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several unrelated types for a corrupt file
        log.add(name, 0, FILE, f"not a readable Parquet file: {err}")
        return
    index = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            index += 1
            size = len(json.dumps(row, default=str).encode("utf-8"))
            if not _too_big(size, max_record_bytes, name, index, log):
                # Parquet columns are nullable; a null optional field is the same as an absent one.
                yield Row(name, index, {k: v for k, v in row.items() if v is not None})


def _text_units(text: str, unit: TextUnit) -> Iterator[tuple[int, str]]:
    """``(line, text)`` for each unit of a text file: the whole file, blank-line paragraphs, or lines."""
    if unit == "file":
        yield 1, text
        return
    lines = text.splitlines()
    if unit == "line":
        yield from ((i, t) for i, t in enumerate(lines, start=1) if t.strip())
        return
    start, block = 0, []
    for i, t in enumerate([*lines, ""], start=1):
        if t.strip():
            start = start or i
            block.append(t)
        elif block:
            yield start, "\n".join(block)
            start, block = 0, []


def read_text(path: Path, log: IssueLog, *, max_record_bytes: int, unit: TextUnit = "file") -> Iterator[Row]:
    """A ``.txt``/``.md`` file, or a folder of them (recursive, sorted by path): one text record per unit."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            log.add(str(path), 0, FILE, "folder has no .txt or .md files")
    else:
        files = [path]
    for file in files:
        name = str(file)
        data = _read_bytes(file)
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            for line, raw in enumerate(data.split(b"\n"), start=1):
                _decode(raw, name, line, log)
            continue
        for line, unit_text in _text_units(text, unit):
            if not _too_big(len(unit_text.encode("utf-8")), max_record_bytes, name, line, log):
                yield Row(name, line, {"text": unit_text})


def read_rows(
    path: Path,
    container: Container,
    log: IssueLog,
    *,
    max_record_bytes: int,
    columns: list[str] | None = None,
    text_unit: TextUnit = "file",
) -> Iterator[Row]:
    """Dispatch to the reader for ``container``. An empty file is one issue, ``(file): file is empty``."""
    # Only small files can be blank; checking the size first avoids reading a big file twice.
    if path.is_file() and path.stat().st_size < 4096 and not _read_bytes(path).strip():
        log.add(str(path), 0, FILE, "file is empty")
        return
    if container == "jsonl":
        yield from read_jsonl(path, log, max_record_bytes=max_record_bytes)
    elif container == "json":
        yield from read_json(path, log, max_record_bytes=max_record_bytes)
    elif container in ("csv", "tsv"):
        delimiter = "\t" if container == "tsv" else ","
        yield from read_csv(path, log, delimiter=delimiter, max_record_bytes=max_record_bytes, columns=columns)
    elif container == "parquet":
        yield from read_parquet(path, log, max_record_bytes=max_record_bytes)
    else:
        yield from read_text(path, log, max_record_bytes=max_record_bytes, unit=text_unit)
