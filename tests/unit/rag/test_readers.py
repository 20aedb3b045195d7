"""Document readers: every format from a tiny file built in the test, plus globs, problems and stable ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailorlm.errors import DataError
from tailorlm.rag import readers
from tailorlm.rag.readers import ReaderOptions, ReadProblem, iter_documents, supported_suffixes
from tailorlm.rag.types import Document

pytestmark = pytest.mark.unit


def _read(path: Path, **options) -> tuple[list[Document], list[ReadProblem]]:
    items = list(iter_documents(path, ReaderOptions(**options)))
    docs = [i for i in items if isinstance(i, Document)]
    return docs, [i for i in items if isinstance(i, ReadProblem)]


def _pdf_bytes(text: str, title: str | None = None) -> bytes:
    """A minimal one-page PDF with one line of Helvetica text; offsets in the xref are computed, not guessed."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title:
        objects.append(f"<< /Title ({title}) >>".encode())
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    info = b" /Info 6 0 R" if title else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    return bytes(out)


# --- prose formats -------------------------------------------------------------------------------------------


def test_txt_file_gives_one_document_named_by_file(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_bytes("\ufeffhello\r\nworld\n".encode())
    (doc,) = list(iter_documents(f, ReaderOptions(metadata={"team": "x"})))
    assert isinstance(doc, Document)
    assert doc.doc_id == "notes.txt"
    assert doc.source == str(f.resolve())
    assert doc.title == "notes"
    assert doc.text == "hello\nworld"  # BOM gone, CRLF normalized
    assert doc.metadata == {"team": "x", "path": "notes.txt", "format": "text"}
    assert doc.hash


def test_markdown_title_is_first_h1_outside_code(tmp_path: Path) -> None:
    text = "```\n# not a title\n```\n\n## Sub\n\n# Real Title\n\nBody.\n"
    (tmp_path / "a.md").write_text(text)
    (tmp_path / "b.markdown").write_text("no heading here\n")
    docs, problems = _read(tmp_path)
    assert not problems
    assert [(d.doc_id, d.title) for d in docs] == [("a.md", "Real Title"), ("b.markdown", "b")]
    assert docs[0].text == text.strip("\n")  # markdown kept as is: the chunker needs the # lines


def test_html_boilerplate_is_stripped(tmp_path: Path) -> None:
    html = """<html><head><title>My Page</title></head><body>
    <nav><a href="/">Home</a> <a href="/about">About us navigation</a></nav>
    <article><h1>Main Title</h1>
    <p>The first paragraph of the article has enough words to count as real content for extraction.</p>
    <h2>Details</h2>
    <p>Second paragraph with more details about the topic, also long enough to be kept by the extractor.</p>
    </article>
    <footer>Copyright 2024 footer text</footer></body></html>"""
    (tmp_path / "page.html").write_text(html)
    (doc,), problems = _read(tmp_path)
    assert not problems
    assert doc.title == "My Page"
    assert "first paragraph of the article" in doc.text
    assert "# Main Title" in doc.text and "## Details" in doc.text
    assert "navigation" not in doc.text and "footer" not in doc.text


def test_html_fallback_keeps_headings_and_drops_chrome(tmp_path: Path) -> None:
    """The fallback used when trafilatura is missing or extracts nothing."""
    import lxml.html

    tree = lxml.html.document_fromstring(
        "<html><body><header>Banner</header><div>Intro <b>bold</b> text<h3>Part</h3><ul><li>one</li></ul></div>"
        "<div role='navigation'>Menu</div></body></html>"
    )
    assert readers._html_fallback(tree) == "Intro bold text\n\n### Part\n\n- one"


def test_pdf_text_title_and_pages(tmp_path: Path) -> None:
    (tmp_path / "paper.pdf").write_bytes(_pdf_bytes("Hello PDF", title="A Paper"))
    (tmp_path / "untitled.pdf").write_bytes(_pdf_bytes("Second file"))
    docs, problems = _read(tmp_path)
    assert not problems
    assert [(d.title, d.text, d.metadata["pages"]) for d in docs] == [
        ("A Paper", "Hello PDF", 1),
        ("untitled", "Second file", 1),
    ]
    assert docs[0].metadata["format"] == "pdf"


def test_corrupt_pdf_and_docx_are_problems_not_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.pdf").write_bytes(b"this is not a pdf at all \x00\x01\x02")
    (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "good.txt").write_text("fine")
    docs, problems = _read(tmp_path)
    assert [d.doc_id for d in docs] == ["good.txt"]
    assert [(Path(p.path).name, p.message.split(":")[0]) for p in problems] == [
        ("bad.docx", "cannot read DOCX"),
        ("bad.pdf", "cannot read PDF"),
    ]


def test_docx_headings_become_markdown(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Setup", level=1)
    d.add_paragraph("Install the package.")
    d.add_heading("Details", level=2)
    d.add_paragraph("first item", style="List Bullet")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "a", "b"
    d.save(str(tmp_path / "guide.docx"))
    (doc,), problems = _read(tmp_path)
    assert not problems
    assert doc.text == "# Setup\n\nInstall the package.\n\n## Details\n\n- first item\n\na | b"
    assert doc.title == "Setup"  # no core title: the first heading


# --- records -------------------------------------------------------------------------------------------------


def test_jsonl_records_metadata_and_bad_lines(tmp_path: Path) -> None:
    rows = [
        json.dumps({"text": "alpha", "title": "A", "lang": "en", "tags": ["x"]}),
        "{not json",
        "",
        json.dumps({"body": "no text field"}),
        json.dumps({"text": "   "}),
        json.dumps({"text": "beta", "lang": "de"}),
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n")
    docs, problems = _read(tmp_path, metadata={"src": "u"})
    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("data.jsonl#1", "A", "alpha"),
        ("data.jsonl#6", "data.jsonl#6", "beta"),
    ]
    # Other scalar fields by default; the list-valued "tags" is not a scalar.
    assert docs[0].metadata == {"src": "u", "lang": "en", "path": "data.jsonl", "format": "jsonl"}
    assert [(p.line, p.message) for p in problems] == [
        (2, "invalid JSON: Expecting property name enclosed in double quotes (column 2)"),
        (4, "missing field 'text'"),
        (5, "field 'text' is empty"),
    ]


def test_jsonl_id_field_and_selected_metadata(tmp_path: Path) -> None:
    rows = [{"id": "k1", "body": "one", "a": 1, "b": 2}, {"id": "k1", "body": "dup"}, {"body": "no id"}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    docs, problems = _read(
        tmp_path, text_field="body", id_field="id", id_required=True, metadata_fields=["b", "missing"]
    )
    assert [(d.doc_id, d.metadata) for d in docs] == [("r.jsonl#k1", {"b": 2, "path": "r.jsonl", "format": "jsonl"})]
    assert [(p.line, p.message) for p in problems] == [
        (2, "duplicate id 'k1' (first at line 1)"),
        (3, "missing field 'id'"),
    ]


def test_the_id_field_is_used_when_present_and_lines_number_the_rest(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"id": "a", "text": "one"}\n{"text": "two"}\n')
    docs, problems = _read(tmp_path)
    assert [d.doc_id for d in docs] == ["r.jsonl#a", "r.jsonl#2"] and problems == []


def test_json_array_uses_item_numbers(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"text": "one"}, {"nope": 1}, "str"]))
    docs, problems = _read(tmp_path)
    assert [d.doc_id for d in docs] == ["a.json#1"]
    assert [(p.line, p.message) for p in problems] == [
        (None, "item 2: missing field 'text'"),
        (None, "item 3: expected a JSON object, got str"),
    ]


def test_csv_and_tsv_rows(tmp_path: Path) -> None:
    (tmp_path / "faq.csv").write_text('q,answer,topic\nWhat?,"It is\nthis",billing\nWhy?,,misc\nHow?,So,misc\n')
    (tmp_path / "t.tsv").write_text("answer\tq\nplain\tx\n")
    docs, problems = _read(tmp_path, text_field="answer", title_field="q")
    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("faq.csv#2", "What?", "It is\nthis"),
        ("faq.csv#5", "How?", "So"),
        ("t.tsv#2", "x", "plain"),
    ]
    assert docs[0].metadata == {"topic": "billing", "path": "faq.csv", "format": "csv"}
    assert [(Path(p.path).name, p.line, p.message) for p in problems] == [("faq.csv", 4, "field 'answer' is empty")]


def test_csv_without_text_column_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n3,4\n")
    docs, problems = _read(tmp_path)
    assert not docs
    assert [(p.line, p.message) for p in problems] == [(1, "missing field 'text' (columns: a, b)")]


# --- walking, errors, stability ------------------------------------------------------------------------------


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"text of {name}")


def test_include_exclude_hidden_and_unknown_suffixes(tmp_path: Path) -> None:
    names = ["a.md", "b.txt", "image.png", "drafts/d.md", "drafts/deep/e.md", "sub/c.md", "sub/x.csv"]
    _tree(tmp_path, [*names, ".hidden.md", ".git/config.txt", "sub/.cache/f.md"])
    ids = lambda **kw: [d.doc_id for d in _read(tmp_path, **kw)[0]]  # noqa: E731
    # Sorted, recursive, unsupported suffixes and dot-names skipped silently.
    assert ids() == ["a.md", "b.txt", "drafts/d.md", "drafts/deep/e.md", "sub/c.md"]  # x.csv: no "text" column
    assert ids(include=["**/*.md"], exclude=["drafts/*"]) == ["a.md", "drafts/deep/e.md", "sub/c.md"]
    assert ids(include=["*.md"], exclude=["drafts/**"]) == ["a.md", "sub/c.md"]  # no slash: any depth
    assert ids(include=["sub/*"]) == ["sub/c.md"]
    assert "sub/.cache/f.md" in ids(include_hidden=True, exclude=["**/.git/**"])
    assert ".git/config.txt" not in ids(include_hidden=True, exclude=["**/.git/**"])


def test_single_unknown_file_is_a_problem_and_missing_path_an_error(tmp_path: Path) -> None:
    f = tmp_path / "image.png"
    f.write_bytes(b"\x89PNG")
    (problem,) = list(iter_documents(f))
    assert isinstance(problem, ReadProblem) and "unsupported file type '.png'" in problem.message
    with pytest.raises(DataError, match="no such file or folder"):
        list(iter_documents(tmp_path / "nope"))


def test_undecodable_and_empty_text_files(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"ok line\n\xff\xfe broken")
    (tmp_path / "empty.md").write_text("  \n\n")
    docs, problems = _read(tmp_path)
    assert not docs
    assert [(Path(p.path).name, p.line, p.message) for p in problems] == [
        ("bad.txt", 2, "not valid UTF-8: byte 0xff"),
        ("empty.md", None, "no text (the file is empty or nothing could be extracted)"),
    ]


def test_doc_ids_are_stable_and_hash_follows_text(tmp_path: Path) -> None:
    _tree(tmp_path, ["a.txt", "n/b.txt"])
    first, _ = _read(tmp_path)
    second, _ = _read(tmp_path)
    assert [(d.doc_id, d.hash) for d in first] == [(d.doc_id, d.hash) for d in second]
    (tmp_path / "a.txt").write_text("changed")
    third, _ = _read(tmp_path)
    assert [d.doc_id for d in third] == ["a.txt", "n/b.txt"]
    assert third[0].hash != first[0].hash and third[1].hash == first[1].hash


def test_supported_suffixes() -> None:
    assert {".txt", ".md", ".html", ".pdf", ".docx", ".jsonl", ".json", ".csv", ".tsv"} <= set(supported_suffixes())
