"""Document readers: turn a file or a folder into ``Document``s for the ingest pipeline.

    for item in iter_documents("docs/", ReaderOptions(exclude=["drafts/**"])):
        if isinstance(item, ReadProblem): report(item)   # one bad file costs that file, not the run
        else: index(item)

Formats are picked by suffix (``supported_suffixes()``). Prose formats give one document per file and keep
headings as Markdown ``#`` lines, because the chunker splits on them; record formats (JSONL, JSON, CSV, TSV)
give one document per record. Everything is a generator, walked in sorted order, so a large folder streams and
two runs over the same files give the same ``doc_id``s in the same order.

Globs (``include``/``exclude``) are matched against the posix path relative to the root folder, gitignore
style: ``*`` and ``?`` stay within one path segment, ``**`` spans any number of folders (zero included, so
``**/*.md`` matches ``a.md``), and a pattern without ``/`` matches the file name at any depth (``*.csv``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tailorlm.core.safe_text import printable
from tailorlm.data.readers import JSONProblem, parse_json
from tailorlm.errors import ConfigError, DataError
from tailorlm.rag.types import Document

_LOGGER = logging.getLogger("tailorlm.rag")

_FORMATS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
}
# The csv module refuses fields over 128 KiB by default; a whole document in one cell is normal here.
_MAX_CSV_FIELD = 64 * 1024 * 1024
_SCALARS = (str, int, float, bool, type(None))


@dataclass
class ReadProblem:
    """A file (or record) that could not be read; ingest reports it and goes on (strict mode makes it fatal)."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        # One line, and no raw control characters from the file's name or content reach the terminal.
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return printable(f"{where}: {self.message}")


@dataclass
class ReaderOptions:
    """What to read and, for record formats, which fields mean what."""

    include: list[str] = field(default_factory=lambda: ["**/*"])
    """Globs (relative to the root folder) a file must match one of; empty = all. Ignored for a single file."""
    exclude: list[str] = field(default_factory=list)
    """Globs that drop a file, e.g. ``["**/.git/**", "drafts/*"]``."""
    include_hidden: bool = False
    """Read files and folders whose name starts with ``.`` (skipped by default: ``.git``, ``.venv``, ...)."""
    text_field: str = "text"
    """JSONL/JSON/CSV: the field holding the text."""
    title_field: str | None = "title"
    """JSONL/JSON/CSV: the optional field holding the title (the ``doc_id`` when absent)."""
    id_field: str | None = "id"
    """JSONL/JSON/CSV: the field with a stable record id. Records without it get their 1-based line (item, for a
    JSON array) unless ``id_required``. A stable id keeps doc_ids (and gold labels) valid when rows move."""
    id_required: bool = False
    """Treat a record without ``id_field`` as a problem instead of numbering it."""
    metadata_fields: list[str] | None = None
    """JSONL/JSON/CSV: fields copied into metadata. ``None`` copies every other scalar field."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """User metadata added to every document."""


def supported_suffixes() -> list[str]:
    """The file suffixes a folder walk reads; any other file in a folder is skipped silently."""
    return sorted(_FORMATS)


def iter_documents(path: str | Path, options: ReaderOptions | None = None) -> Iterator[Document | ReadProblem]:
    """Read one file or a folder (recursively) into documents, yielding a ``ReadProblem`` for what fails.

    ``doc_id`` is the path relative to the folder (the file name for a single file), plus ``#<id>`` for a
    record. Raises ``DataError`` only when ``path`` does not exist.
    """
    options = options or ReaderOptions()
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"no such file or folder: {root}", hint="give a document file or a folder of documents")
    if root.is_dir():
        for file, rel in _walk(root, options):
            yield from _read_file(file, rel, options)
        return
    if root.suffix.lower() not in _FORMATS:
        # Named explicitly, so silence would hide a mistake; in a folder walk it would be noise.
        message = f"unsupported file type '{root.suffix or root.name}' (supported: {', '.join(supported_suffixes())})"
        yield ReadProblem(str(root.resolve()), message)
        return
    yield from _read_file(root, root.name, options)


# --- walking -------------------------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    """A glob (see the module docstring) as a regex over a relative posix path."""
    parts = pattern.strip().strip("/").split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        seg, j = "", 0
        while j < len(part):
            c = part[j]
            if c == "*":
                seg += "[^/]*"
            elif c == "?":
                seg += "[^/]"
            elif c == "[" and (close := part.find("]", j + 2)) != -1:
                body = part[j + 1 : close]
                seg += "[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]"
                j = close
            else:
                seg += re.escape(c)
            j += 1
        out.append(seg if last else seg + "/")
    regex = "".join(out)
    return regex if "/" in pattern.strip().strip("/") else f"(?:.*/)?{regex}"


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    regexes = []
    for p in patterns:
        if not p.strip():
            continue
        regex = _glob_regex(p)
        try:  # a reversed range (``[z-a]``) or an empty class (``[!]``) is not a pattern re can compile
            re.compile(regex)
        except re.error as err:
            raise ConfigError(
                f"invalid glob pattern {p!r}: {err.msg}", hint="see the glob rules in rag/readers.py"
            ) from None
        regexes.append(regex)
    return re.compile("|".join(f"(?:{r})" for r in regexes) + r"\Z") if regexes else None


def _walk(root: Path, options: ReaderOptions) -> Iterator[tuple[Path, str]]:
    """Supported files under ``root`` that pass the globs, in sorted order, with their relative posix path."""
    include = _compile(options.include)
    exclude = _compile(options.exclude)
    # ``x/**`` excludes a whole folder: prune it instead of walking it (think node_modules). Tested on "dir/".
    prune = _compile(p for p in options.exclude if p.strip().rstrip("/").endswith("/**"))
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        prefix = here.relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        dirnames[:] = sorted(
            d
            for d in dirnames
            if (options.include_hidden or not d.startswith(".")) and not (prune and prune.match(prefix + d + "/"))
        )
        for name in sorted(filenames):
            rel = prefix + name
            if not options.include_hidden and name.startswith("."):
                continue
            if Path(name).suffix.lower() not in _FORMATS:
                continue
            if (include is not None and not include.match(rel)) or (exclude is not None and exclude.match(rel)):
                continue
            yield here / name, rel


# --- one file ------------------------------------------------------------------------------------------------


def _read_file(file: Path, rel: str, options: ReaderOptions) -> Iterator[Document | ReadProblem]:
    fmt = _FORMATS[file.suffix.lower()]
    source = str(file.resolve())
    try:
        if fmt in ("jsonl", "json", "csv", "tsv"):
            yield from _read_records(file, source, rel, fmt, options)
            return
        read = {"text": _read_text, "markdown": _read_text, "html": _read_html, "pdf": _read_pdf, "docx": _read_docx}
        result = read[fmt](file, source)
    except OSError as err:  # unreadable file (permissions, vanished mid-walk): that file's problem only
        yield ReadProblem(source, f"cannot read file: {err.strerror or err}")
        return
    if isinstance(result, ReadProblem):
        yield result
        return
    title, text, extra = result
    text = _clean(text)
    if not text.strip():
        yield ReadProblem(source, "no text (the file is empty or nothing could be extracted)")
        return
    metadata = {**options.metadata, **extra, "path": rel, "format": fmt}
    yield Document(doc_id=rel, source=source, title=title.strip() or file.stem, text=text, metadata=metadata)


Extracted = tuple[str, str, dict[str, Any]] | ReadProblem  # (title, text, extra metadata)


def _clean(text: str) -> str:
    # NUL bytes (common in PDF extraction) are not storable in PostgreSQL text; CRLF would skew chunk offsets.
    return text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").strip("\n")


def _decode(raw: bytes, source: str) -> str | ReadProblem:
    try:
        return raw.decode("utf-8-sig")  # -sig: a BOM from Windows editors is not part of the text
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        return ReadProblem(source, f"not valid UTF-8: byte 0x{raw[err.start]:02x}", line=line)


_CODE_FENCE = re.compile(r"^\s*(```|~~~)")
_H1 = re.compile(r"^# +(.+?)(?: +#+)?\s*$")


def _markdown_title(text: str) -> str:
    """The first level-1 ATX heading outside a code fence, or ``""``."""
    fenced = False
    for line in text.splitlines():
        if _CODE_FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _H1.match(line)):
            return m.group(1)
    return ""


def _first_line_title(text: str) -> str:
    """A plain text's first line when it reads as a title: a paragraph of one line, under 200 characters, not
    ending like a sentence ("Attention Is All You Need", "tar(1) — an archiving utility"). A file name such as
    ``paper-017`` says nothing, and the title is embedded with every sentence and searched with every chunk."""
    stripped = text.lstrip()
    first, _, rest = stripped.partition("\n")
    first = first.strip()
    if not first or len(first) > 200 or first.endswith((".", ",", ";", ":")):
        return ""
    if rest and rest.split("\n", 1)[0].strip():
        return ""  # the first paragraph goes on: a sentence wrapped over lines, not a title
    return first


def _read_text(file: Path, source: str) -> Extracted:
    text = _decode(file.read_bytes(), source)
    if isinstance(text, ReadProblem):
        return text
    # Plain text gets a Markdown title too (README.txt files often start with one), else a title-like first line.
    plain = file.suffix.lower() in (".txt", ".text")
    return _markdown_title(text) or (_first_line_title(text) if plain else ""), text, {}


# --- HTML ----------------------------------------------------------------------------------------------------


@functools.cache
def _trafilatura() -> ModuleType | None:
    """trafilatura, or None when it cannot be imported (it needs ``lxml_html_clean`` since lxml 5.2)."""
    try:
        import trafilatura
    except ImportError as err:
        _LOGGER.warning("trafilatura unavailable (%s); HTML falls back to a simpler boilerplate filter", err)
        return None
    return trafilatura


# Dropped by the fallback: page chrome, not content.
_CHROME = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "iframe", "svg")
_CHROME_ROLES = ("navigation", "banner", "contentinfo", "complementary", "search")
# Block-level tags: an element with none inside it is emitted as one paragraph.
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_PARAGRAPHS = frozenset({"p", "div", "section", "article", "main", "li", "ul", "ol", "pre", "blockquote", "body"})
_OTHER_BLOCKS = frozenset({"table", "tr", "td", "th", "dl", "dt", "dd", "figure", "figcaption", "caption", "hr", "br"})
_BLOCKS = _PARAGRAPHS | _OTHER_BLOCKS | frozenset(_HEADINGS)


def _read_html(file: Path, source: str) -> Extracted:
    import lxml.html
    from lxml import etree

    raw = file.read_bytes()
    if not raw.strip():
        return "", "", {}
    try:
        # Bytes, not str: lxml honours the page's <meta charset>, which a blind UTF-8 decode would not.
        tree = lxml.html.document_fromstring(raw)
    except (etree.ParserError, ValueError) as err:
        return ReadProblem(source, f"cannot parse HTML: {err}")
    title = _squash(tree.findtext(".//title"))
    text = ""
    if (trafilatura := _trafilatura()) is not None:
        text = trafilatura.extract(raw, output_format="markdown", include_comments=False) or ""
    if not text.strip():  # trafilatura gives up on short or unusual pages; some text beats none
        text = _html_fallback(tree)
    return title, text, {}


def _html_fallback(tree: Any) -> str:
    """Plain extraction: drop page chrome, keep the main/article element if any, headings as ``#`` lines."""
    for el in list(tree.iter(*_CHROME)):
        el.drop_tree()
    for el in list(tree.xpath("//*[@role]")):
        if el.get("role") in _CHROME_ROLES:
            el.drop_tree()
    body = next(iter(tree.xpath("//main | //article")), None)
    if body is None:
        body = tree.find(".//body")
    if body is None:
        body = tree
    blocks: list[str] = []
    _html_blocks(body, blocks)
    return "\n\n".join(b for b in blocks if b)


def _squash(text: str | None) -> str:
    return " ".join((text or "").split())


def _is_block(el: Any) -> bool:
    """A block tag, or an inline one that wraps a block (``<a><div>...``): either breaks the paragraph."""
    return isinstance(el.tag, str) and (
        el.tag in _BLOCKS or any(isinstance(d.tag, str) and d.tag in _BLOCKS for d in el.iterdescendants())
    )


def _html_blocks(el: Any, out: list[str]) -> None:
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag in _HEADINGS:
        out.append("#" * int(tag[1]) + " " + _squash(el.text_content()))
        return
    if tag == "pre":
        out.append(el.text_content().strip("\n"))
        return
    prefix = "- " if tag == "li" else ""
    run = [el.text or ""]  # inline text since the last block child: one paragraph
    for child in el:
        if _is_block(child):
            out.append(prefix + _squash("".join(run)) if _squash("".join(run)) else "")
            _html_blocks(child, out)
            run = []
        elif isinstance(child.tag, str):  # comments and processing instructions add only their tail
            run.append(child.text_content())
        run.append(child.tail or "")
    if text := _squash("".join(run)):
        out.append(prefix + text)


# --- PDF and DOCX --------------------------------------------------------------------------------------------


def _read_pdf(file: Path, source: str) -> Extracted:
    import pypdf

    # Broad excepts: a damaged PDF can fail anywhere in pypdf with almost any exception type.
    try:
        reader = pypdf.PdfReader(file)
        if reader.is_encrypted and not reader.decrypt(""):
            return ReadProblem(source, "cannot read PDF: encrypted with a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as err:
        return ReadProblem(source, f"cannot read PDF: {err}")
    try:
        title = str((reader.metadata or {}).get("/Title") or "")
    except Exception:  # a broken info dictionary costs the title, not the text
        title = ""
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    return title, text, {"pages": len(pages)}


_HEADING_STYLE = re.compile(r"^Heading ([1-9])$")


def _read_docx(file: Path, source: str) -> Extracted:
    import docx
    from docx.table import Table

    try:
        doc = docx.Document(str(file))
        lines: list[str] = []
        first_heading = ""
        for block in doc.iter_inner_content():
            if isinstance(block, Table):  # one line per row: keeps cells of a row together for the chunker
                lines.extend(" | ".join(_squash(c.text) for c in row.cells) for row in block.rows)
                continue
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            heading = _HEADING_STYLE.match(style)
            level = 1 if style == "Title" else int(heading.group(1)) if heading else 0
            if level:
                first_heading = first_heading or text
                lines.append("#" * level + " " + text)
            else:
                lines.append(f"- {text}" if style.startswith("List") else text)
        title = doc.core_properties.title or first_heading
    except Exception as err:  # a bad zip, a missing part, broken XML: python-docx raises many types
        return ReadProblem(source, f"cannot read DOCX: {err}")
    return title, "\n\n".join(lines), {}


# --- records -------------------------------------------------------------------------------------------------

Record = tuple[int, Any]  # (line or item number, parsed value)


def _read_records(
    file: Path, source: str, rel: str, fmt: str, options: ReaderOptions
) -> Iterator[Document | ReadProblem]:
    """One document per record; ``line`` in problems is the file line (the item number for a JSON array)."""
    where = "line"
    if fmt == "jsonl":
        records: Iterator[Record | ReadProblem] = _jsonl_records(file, source)
    elif fmt == "json":
        records, where = _json_records(file, source)
    else:
        records = _csv_records(file, source, "\t" if fmt == "tsv" else ",", options.text_field)
    seen: dict[str, int] = {}
    for item in records:
        if isinstance(item, ReadProblem):
            yield item
            continue
        number, value = item
        yield _record_document(number, value, where, seen, source, rel, fmt, options)


def _record_document(
    number: int, value: Any, where: str, seen: dict[str, int], source: str, rel: str, fmt: str, options: ReaderOptions
) -> Document | ReadProblem:
    # JSON array items have no line: the item number goes in the message instead.
    line, prefix = (number, "") if where == "line" else (None, f"item {number}: ")

    def problem(message: str) -> ReadProblem:
        return ReadProblem(source, prefix + message, line=line)

    if not isinstance(value, dict):
        return problem(f"expected a JSON object, got {type(value).__name__}")
    text = value.get(options.text_field)
    if text is None:
        return problem(f"missing field '{options.text_field}'")
    if not isinstance(text, str):
        return problem(f"field '{options.text_field}' is not a string (got {type(text).__name__})")
    if not text.strip():
        return problem(f"field '{options.text_field}' is empty")
    record_id = str(number)
    if options.id_field is not None:
        raw_id = value.get(options.id_field)
        if raw_id is not None and str(raw_id).strip() != "":
            record_id = str(raw_id).strip()
        elif options.id_required:
            return problem(f"missing field '{options.id_field}'")
    if record_id in seen:  # two documents with one doc_id would overwrite each other in the store
        return problem(f"duplicate id '{record_id}' (first at {where} {seen[record_id]})")
    seen[record_id] = number
    doc_id = f"{rel}#{record_id}"
    title = value.get(options.title_field) if options.title_field else None
    own = {options.text_field, options.title_field, options.id_field}
    if options.metadata_fields is None:
        selected = {k: v for k, v in value.items() if k not in own and isinstance(v, _SCALARS)}
    else:
        selected = {k: value[k] for k in options.metadata_fields if k in value}
    metadata = {**options.metadata, **selected, "path": rel, "format": fmt}
    title = title.strip() if isinstance(title, str) and title.strip() else doc_id
    return Document(doc_id=doc_id, source=source, title=title, text=_clean(text), metadata=metadata)


def _jsonl_records(file: Path, source: str, data: bytes | None = None) -> Iterator[Record | ReadProblem]:
    lines: Iterable[bytes] = data.splitlines() if data is not None else file.open("rb")  # stream big files
    try:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield ReadProblem(source, f"not valid UTF-8: byte 0x{raw[err.start]:02x}", line=number)
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            try:
                yield number, parse_json(text)
            except json.JSONDecodeError as err:
                yield ReadProblem(source, f"invalid JSON: {err.msg} (column {err.colno})", line=number)
            except JSONProblem as err:  # too deep, a giant integer, a lone surrogate
                yield ReadProblem(source, f"invalid JSON: {err}", line=number)
    finally:
        if isinstance(lines, io.IOBase):
            lines.close()


def _json_records(file: Path, source: str) -> tuple[Iterator[Record | ReadProblem], str]:
    """A JSON array (item numbers), one object (one record), or JSON Lines misnamed ``.json`` (lines)."""
    data = file.read_bytes()
    text = _decode(data, source)
    if isinstance(text, ReadProblem):
        return iter([text]), "line"
    try:
        value = parse_json(text)
    except JSONProblem as err:  # too deep, a giant integer, a lone surrogate: the whole array is lost
        return iter([ReadProblem(source, f"invalid JSON: {err}")]), "line"
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several objects one after another: JSON Lines under a .json name
            return _jsonl_records(file, source, data), "line"
        return iter([ReadProblem(source, f"invalid JSON: {err.msg} (column {err.colno})", line=err.lineno)]), "line"
    if isinstance(value, list):
        return iter(enumerate(value, start=1)), "item"
    return iter([(1, value)]), "line"


def _csv_records(file: Path, source: str, delimiter: str, text_field: str) -> Iterator[Record | ReadProblem]:
    """Rows as dicts keyed by the header; a row's number is the file line it starts on."""
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_CSV_FIELD))
    # TSV without quote handling, as in tailorlm.data: quotes are ordinary characters there.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with file.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header: list[str] | None = None
        previous_end = 0
        try:
            for row in reader:
                start, previous_end = previous_end + 1, reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                if header is None:
                    header = [h.strip() for h in row]
                    if text_field not in header:
                        cols = ", ".join(header)
                        yield ReadProblem(source, f"missing field '{text_field}' (columns: {cols})", line=start)
                        return
                    continue
                if len(row) > len(header):
                    yield ReadProblem(source, f"row has {len(row)} cells, the header has {len(header)}", line=start)
                    continue
                yield start, dict(zip(header, row, strict=False))
        except UnicodeDecodeError as err:  # the text stream decodes in blocks: the line is not known
            yield ReadProblem(source, f"not valid UTF-8: byte 0x{err.object[err.start]:02x}")
            return
        except csv.Error as err:
            kind = "TSV" if delimiter == "\t" else "CSV"
            yield ReadProblem(source, f"invalid {kind}: {err}", line=reader.line_num)
            return
    if header is None:
        yield ReadProblem(source, "no header row (the file is empty)")
