"""Neighbour expansion (windows of adjacent chunks), the strict and adjacent hit measures, and plain-text headings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tailorlm.rag.chunking import ChunkingConfig, _sections, chunk_document, whitespace_token_counter
from tailorlm.rag.evaluation import RetrievalQuery, join_adjacent
from tailorlm.rag.retrieval import expand, quantize_sentences
from tailorlm.rag.types import Document, Hit, StoredChunk

pytestmark = pytest.mark.unit

TEXT = "Alpha one. Alpha two.\n\nBeta one. Beta two.\n\nGamma one. Gamma two.\n\nDelta one. Delta two."


def stored(doc: Document, i: int, start: int, end: int) -> StoredChunk:
    v = np.ones(3, np.float32) / np.sqrt(3)
    return StoredChunk(
        f"{doc.doc_id}#{i}", doc.doc_id, doc.hash, "src", "t", "", doc.text[start:end], start, end, {}, v,
        quantize_sentences(v[None]),
    )  # fmt: skip


class DictStore:
    dim = 3

    def __init__(self, chunks: list[StoredChunk]) -> None:
        self.by_id = {c.chunk_id: c for c in chunks}

    def read_chunks(self, ids: list[str]) -> list[StoredChunk]:
        return [self.by_id[i] for i in ids if i in self.by_id]


@pytest.fixture()
def paragraphs() -> tuple[Document, list[StoredChunk]]:
    doc = Document("d.md", "d.md", "d", TEXT)
    spans, pos = [], 0
    for para in TEXT.split("\n\n"):
        start = TEXT.index(para, pos)
        spans.append((start, start + len(para)))
        pos = start + len(para)
    return doc, [stored(doc, i, a, b) for i, (a, b) in enumerate(spans)]


def test_a_window_is_the_exact_span_of_the_document(paragraphs: tuple[Document, list[StoredChunk]]) -> None:
    doc, chunks = paragraphs
    hits = expand(DictStore(chunks), [Hit(chunks[1], 1.0)], neighbours=1, k=1)
    w = hits[0].chunk
    assert (w.start, w.end) == (chunks[0].start, chunks[2].end)
    assert w.text == doc.text[w.start : w.end]  # gaps are filled with whitespace of their exact length
    assert hits[0].core == (chunks[1].start, chunks[1].end)
    assert hits[0].as_json()["match_start"] == chunks[1].start


def test_windows_stop_at_the_document_edges_and_skip_covered_hits(
    paragraphs: tuple[Document, list[StoredChunk]],
) -> None:
    _, chunks = paragraphs
    ranked = [Hit(chunks[0], 3.0), Hit(chunks[1], 2.0), Hit(chunks[3], 1.0)]
    hits = expand(DictStore(chunks), ranked, neighbours=1, k=2)
    assert [(h.chunk.start, h.chunk.end) for h in hits] == [
        (chunks[0].start, chunks[1].end),  # the first chunk has no left neighbour
        (chunks[2].start, chunks[3].end),  # chunk 1 lies inside the first window: chunk 3 takes its place
    ]


def test_overlapping_chunks_are_joined_once() -> None:
    doc = Document("d", "d", "d", "one two three four five six")
    a, b = stored(doc, 0, 0, 13), stored(doc, 1, 8, 23)  # "one two three" and "three four five" overlap
    w = expand(DictStore([a, b]), [Hit(a, 1.0)], neighbours=1, k=1)[0].chunk
    assert w.text == "one two three four five"


def test_strict_hits_need_the_whole_answer_in_one_chunk(paragraphs: tuple[Document, list[StoredChunk]]) -> None:
    _, chunks = paragraphs
    answer = "Beta two.\n\nGamma one."  # straddles chunks 1 and 2
    start = TEXT.index(answer)
    by_span = RetrievalQuery("q", "?", gold=[{"doc_id": "d.md", "start": start, "end": start + len(answer)}])
    by_text = RetrievalQuery("q", "?", answers=["Beta two. Gamma one."])
    for q in (by_span, by_text):
        assert not q.relevant(chunks[1]) and not q.relevant(chunks[2])
        assert q.relevant_adjacent([chunks[2], chunks[0], chunks[1]])
        assert not q.relevant_adjacent([chunks[0], chunks[2]])
    inside = RetrievalQuery("q", "?", gold=[{"doc_id": "d.md", "start": 24, "end": 30}])
    assert inside.relevant(chunks[1])
    by_doc = RetrievalQuery("q", "?", answers=["Beta two."], doc_ids=["other.md"])  # named documents decide
    assert not by_doc.relevant(chunks[1]) and RetrievalQuery("q", "?", doc_ids=["d.md"]).relevant(chunks[0])


def test_join_adjacent_keeps_separate_runs_apart(paragraphs: tuple[Document, list[StoredChunk]]) -> None:
    _, chunks = paragraphs
    runs = join_adjacent([chunks[3], chunks[0], chunks[1]])
    assert [(a, b) for _, a, b, _ in runs] == [(chunks[0].start, chunks[1].end), (chunks[3].start, chunks[3].end)]


def test_plain_text_headings_make_sections() -> None:
    text = (
        "A paper title\n\nAbstract\nWe study things.\n\n1 Introduction\nIt begins. It goes on.\n\n"
        "2.1 Data and setup\nData here.\n\nDESCRIPTION\n   ls lists files.\n\n"
        "This line ends like a sentence.\nMore.\n\nIV. RESULTS\nThe end."
    )
    paths = [s.path for s in _sections(text)]
    assert paths == ["", "1 Introduction", "1 Introduction > 2.1 Data and setup", "DESCRIPTION", "IV. RESULTS"]
    chunks = chunk_document(
        Document("p.txt", "p.txt", "p", text), ChunkingConfig(max_tokens=200, overlap_tokens=0, min_tokens=0),
        whitespace_token_counter,
    )  # fmt: skip
    assert [c.heading for c in chunks][-1] == "IV. RESULTS"
    assert all(c.text == text[c.start : c.end] for c in chunks)


def test_markdown_headings_win_over_plain_ones() -> None:
    assert [s.path for s in _sections("# Title\n\nBODY TEXT\nx\n\n## Part\ny")] == ["Title", "Title > Part"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(("avx2",), "onnx"), (("avx2", "avx512f"), "onnx"), (("avx2", "avx512f", "avx512_vnni"), "onnx-int8"),
     (("avx2", "avx_vnni"), "onnx-int8"), (("asimddp",), "onnx-int8")],
)  # fmt: skip
def test_the_embedder_backend_follows_the_cpus_int8_instructions(
    flags: tuple[str, ...], expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json

    from tailorlm.core import cpu
    from tailorlm.rag import embedding

    folder = tmp_path / "st"
    (folder / "0_Transformer").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps([
        {"type": "sentence_transformers.models.Transformer", "path": "0_Transformer"},
        {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
    ]))  # fmt: skip
    (folder / "0_Transformer" / "config.json").write_text('{"model_type": "bert"}')
    monkeypatch.setattr(cpu, "cpu_info", lambda: cpu.CpuInfo("test", "x86_64", 2, flags, None))
    assert embedding.auto_backend(folder) == expected
    (folder / "0_Transformer" / "config.json").write_text('{"model_type": "xlm-roberta"}')
    assert embedding.auto_backend(folder) == "torch"  # not an encoder the ONNX path is verified for


@pytest.mark.parametrize(
    ("text", "title"),
    [("Attention Is All You Need\n\nAbstract\nThe dominant models...", "Attention Is All You Need"),
     ("tar(1) — an archiving utility\n\nNAME\n tar", "tar(1) — an archiving utility"),
     ("This note starts with a sentence.\n\nMore.", ""),
     ("A sentence wrapped\nover two lines without a blank line.\n", ""),
     ("# Markdown title\n\nbody", "Markdown title")],
)  # fmt: skip
def test_plain_text_takes_a_title_like_first_line(text: str, title: str, tmp_path: Path) -> None:
    from tailorlm.rag.readers import iter_documents

    (tmp_path / "paper-017.txt").write_text(text, encoding="utf-8")
    (doc,) = list(iter_documents(tmp_path))
    assert doc.title == (title or "paper-017")


def test_the_sign_test_that_guards_tuned_settings() -> None:
    from tailorlm.rag.tune import MAX_P, sign_test

    old = [False] * 4 + [True] * 56
    assert sign_test(old, old) == 1.0
    two = [True, True, *old[2:]]  # gains 2 questions, loses none: P(X >= 2 | n = 2) = 1/4, not enough
    assert sign_test(two, old) == pytest.approx(0.25) and sign_test(two, old) >= MAX_P
    four = [True] * 60  # gains all 4: 1/16
    assert sign_test(four, old) == pytest.approx(1 / 16) and MAX_P > 1 / 16
    mixed = [True] * 4 + [False, *old[5:]]  # gains 4, loses 1: (C(5,4) + C(5,5)) / 32 = 6/32
    assert sign_test(mixed, old) == pytest.approx(6 / 32)
    assert sign_test(old, four) == 1.0  # worse: never "significant"
