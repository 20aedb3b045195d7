"""Fuzz the RAG document readers (``tailorlm.rag.readers.iter_documents``) on every suffix they read.

The property: reading never raises. Each file gives ``Document``s with UTF-8-encodable text, or a
``ReadProblem`` that names the file on one line; one bad file costs that file (or record), never the walk.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.fuzz_helpers import FIXTURES, HOSTILE, budget, counted, json_values, mutated_bytes, nasty_text
from tailorlm.errors import ConfigError
from tailorlm.rag.readers import ReaderOptions, ReadProblem, iter_documents, supported_suffixes
from tailorlm.rag.types import Document

pytestmark = pytest.mark.unit


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text``, written by hand (with a correct xref table) so the test needs no writer."""
    safe = text.encode("latin-1", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    stream = b"BT /F1 12 Tf 72 720 Td (" + safe + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _minimal_docx(paragraphs: list[str]) -> bytes:
    import docx

    doc = docx.Document()
    doc.add_heading("Fuzzed", level=1)
    for p in paragraphs:
        # python-docx refuses XML-illegal characters itself; keep the ones XML allows.
        doc.add_paragraph("".join(c for c in p if c in "\t\n" or (ord(c) >= 0x20 and not 0xD800 <= ord(c) <= 0xDFFF)))
    table = doc.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "a", "b"
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


SEEDS: dict[str, bytes] = {
    ".pdf": _minimal_pdf("Hello fuzz (1) \\ world"),
    ".docx": _minimal_docx(["Hello fuzz", "second paragraph"]),
    ".html": b"<html><head><title>T</title></head><body><nav>x</nav>"
    b"<main><h1>Head</h1><p>Body text</p></main></body></html>",
    ".md": "# Title\n\nSome *text* with ünïcode.\n\n```\n# not a title\n```\n".encode(),
    ".txt": b"plain text\r\nsecond line\n",
    ".jsonl": b'{"id": 1, "title": "a", "text": "alpha"}\n{"id": 2, "text": "beta", "n": 3}\n',
    ".json": b'[{"id": "x", "text": "alpha"}, {"text": "beta"}]',
    ".csv": b'id,title,text\n1,a,"alpha, with comma"\n2,b,beta\n',
    ".tsv": b"id\ttext\n1\talpha\n2\tbeta\n",
}
for real in sorted(FIXTURES.iterdir()):
    SEEDS.setdefault(real.suffix, real.read_bytes())


def _check_all(path: Path, options: ReaderOptions | None = None) -> list[Document | ReadProblem]:
    items = list(iter_documents(path, options))
    for item in items:
        if isinstance(item, ReadProblem):
            line = str(item)
            assert str(Path(item.path).name) in line and "\n" not in line and "\x1b" not in line, line
        else:
            assert isinstance(item, Document)
            assert item.text.strip() and "\x00" not in item.text
            # Stores and embedders encode the text; a lone surrogate would fail there, far from the file.
            (item.text + item.title + item.doc_id).encode("utf-8")
            json.dumps(item.metadata, ensure_ascii=False).encode("utf-8")
    return items


def test_seed_files_read_cleanly(tmp_path: Path) -> None:
    for suffix, data in SEEDS.items():
        (tmp_path / f"seed{suffix}").write_bytes(data)
    items = _check_all(tmp_path)
    problems = [str(i) for i in items if isinstance(i, ReadProblem)]
    assert not problems, problems
    assert {d.metadata["format"] for d in items if isinstance(d, Document)} >= {"pdf", "docx", "html", "markdown"}


@settings(max_examples=budget(120))
@given(st.data())
@counted("rag: mutated real files (txt, md, html, pdf, docx, jsonl, json, csv, tsv)")
def test_mutated_documents(data: st.DataObject) -> None:
    suffix = data.draw(st.sampled_from(sorted(SEEDS)))
    folder = Path(tempfile.mkdtemp(prefix="fuzz-rag-"))
    path = folder / f"doc{suffix}"
    path.write_bytes(data.draw(mutated_bytes(SEEDS[suffix])))
    _check_all(path)


@settings(max_examples=budget(60))
@given(data=st.binary(max_size=400), suffix=st.sampled_from(supported_suffixes()))
@counted("rag: random bytes")
def test_random_bytes(data: bytes, suffix: str) -> None:
    path = Path(tempfile.mkdtemp(prefix="fuzz-rag-")) / f"doc{suffix}"
    path.write_bytes(data)
    _check_all(path)


@settings(max_examples=budget(60))
@given(
    records=st.lists(
        json_values | st.dictionaries(st.sampled_from(["id", "title", "text"]) | nasty_text, json_values)
    ),
    suffix=st.sampled_from([".jsonl", ".json"]),
    id_required=st.booleans(),
)
@counted("rag: JSON records with wrong types")
def test_json_records(records: list, suffix: str, id_required: bool) -> None:
    path = Path(tempfile.mkdtemp(prefix="fuzz-rag-")) / f"doc{suffix}"
    if suffix == ".jsonl":
        body = "\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    else:
        body = json.dumps(records, ensure_ascii=False)
    path.write_bytes(body.encode("utf-8", "surrogatepass"))
    _check_all(path, ReaderOptions(id_required=id_required))


@settings(max_examples=budget(25))
@given(texts=st.lists(nasty_text | st.sampled_from(HOSTILE), min_size=1, max_size=4))
@counted("rag: html/pdf/docx with hostile text")
def test_generated_documents(texts: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-rag-"))
    joined = "\n".join(texts)
    html = "<html><title>" + texts[0] + "</title><body><p>" + "</p><p>".join(texts) + "</p></body></html>"
    (folder / "a.html").write_bytes(html.encode("utf-8", "surrogatepass"))
    (folder / "b.pdf").write_bytes(_minimal_pdf(joined))
    (folder / "c.docx").write_bytes(_minimal_docx(texts))
    (folder / "d.md").write_bytes(("# " + joined).encode("utf-8", "surrogatepass"))
    _check_all(folder)


# Glob syntax pieces, so that brackets, ranges and negations meet each other more often than in random text.
glob = (
    st.lists(st.sampled_from(["[", "]", "!", "-", "*", "**", "?", "/", "a", "z", "\\", ".", "("]), max_size=8).map(
        "".join
    )
    | nasty_text
)


@settings(max_examples=budget(30))
@given(include=st.lists(glob, max_size=3), exclude=st.lists(glob, max_size=3))
@counted("rag: include/exclude globs")
def test_hostile_globs(include: list[str], exclude: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-rag-"))
    (folder / "sub").mkdir()
    (folder / "sub" / "a.txt").write_text("alpha", encoding="utf-8")
    try:
        _check_all(folder, ReaderOptions(include=include, exclude=exclude))
    except ConfigError as err:  # a glob that is not a pattern: the error quotes it
        assert "invalid glob pattern" in str(err) and any(repr(p) in str(err) for p in include + exclude)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("deep.jsonl", b"[" * 100_000 + b"\n"),
        ("deep.json", b"[" * 100_000),
        ("bigint.jsonl", b'{"text": "a", "n": ' + b"1" * 5000 + b"}\n"),
        ("bigint.json", b'[{"text": "a", "n": ' + b"1" * 5000 + b"}]"),
        ("surrogate.jsonl", b'{"text": "a\\ud800b"}\n'),
        ("surrogate.json", b'[{"text": "a\\udfffb"}]'),
    ],
)
def test_regressions(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    items = _check_all(path)
    assert items and all(isinstance(i, ReadProblem) for i in items), items


@pytest.mark.parametrize("pattern", ["[z-a]", "[!]x", "a/[9-0]/*.md"])
def test_invalid_glob_is_a_config_error(tmp_path: Path, pattern: str) -> None:
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid glob pattern"):
        list(iter_documents(tmp_path, ReaderOptions(exclude=[pattern])))
