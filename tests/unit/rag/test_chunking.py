import itertools
import random

import pytest
from pydantic import ValidationError

from tailorlm.rag.chunking import (
    ChunkingConfig,
    chunk_document,
    sentence_spans_in_chunk,
    split_sentences,
    whitespace_token_counter,
)
from tailorlm.rag.types import Chunk, Document

pytestmark = pytest.mark.unit

WORDS = ("the", "a", "model", "data", "token", "vector", "query", "index", "store", "answer", "cite", "rank")


def _doc(text: str) -> Document:
    return Document(doc_id="d", source="d.md", title="d", text=text)


def _chunk(text: str, **kw: object) -> list[Chunk]:
    return chunk_document(_doc(text), ChunkingConfig(**kw), whitespace_token_counter)


def _sentence(rng: random.Random, n: int | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(n or rng.randint(1, 18))]
    return " ".join(words).capitalize() + rng.choice(".!?")


def _random_markdown(rng: random.Random, n_blocks: int) -> str:
    """Headings (always followed by text), paragraphs, odd whitespace, lists, fenced code with '#' lines."""
    parts = []
    for _ in range(n_blocks):
        r = rng.random()
        if r < 0.15:
            parts.append("#" * rng.randint(1, 4) + " " + _sentence(rng, 2)[:-1])
            parts.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))))
        elif r < 0.2:
            parts.append("- " + _sentence(rng) + "\n- " + " ".join(rng.choices(WORDS, k=rng.randint(1, 40))))
        elif r < 0.25:
            parts.append("```bash\n# not a heading\nrun it\n```")
        elif r < 0.3:
            parts.append(" ".join(rng.choices(WORDS, k=rng.randint(30, 120))))  # no punctuation at all
        else:
            parts.append(rng.choice([" ", "\n", "  \t"]).join(_sentence(rng) for _ in range(rng.randint(1, 8))))
    return rng.choice(["", "\n", "  "]) + rng.choice(["\n\n", "\n \n\n"]).join(parts) + rng.choice(["", "\n  "])


def _check_invariants(doc: Document, chunks: list[Chunk], max_tokens: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.doc_id == doc.doc_id
        assert c.text == doc.text[c.start : c.end]
        assert c.text and c.text == c.text.strip()
        assert whitespace_token_counter(c.text) <= max_tokens
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_offsets_tokens_and_coverage_on_random_markdown() -> None:
    rng = random.Random(0)
    for trial in range(40):
        doc = _doc(_random_markdown(rng, rng.randint(1, 25)))
        cfg = ChunkingConfig(
            max_tokens=rng.randint(8, 80),
            overlap_tokens=rng.randint(0, 7),
            min_tokens=rng.randint(0, 8),
            respect_headings=trial % 3 != 0,
        )
        chunks = chunk_document(doc, cfg, whitespace_token_counter)
        _check_invariants(doc, chunks, cfg.max_tokens)
        covered = bytearray(len(doc.text))
        for c in chunks:
            covered[c.start : c.end] = b"\x01" * (c.end - c.start)
        missing = [i for i, ch in enumerate(doc.text) if not ch.isspace() and not covered[i]]
        assert not missing, (trial, doc.text[missing[0] - 20 : missing[0] + 20])


def test_empty_and_blank_documents_have_no_chunks() -> None:
    assert _chunk("") == []
    assert _chunk(" \n\n\t ") == []


MARKDOWN = """Preamble text before any heading.

# Install

Install it with pip. It needs Python 3.11 or later.

## Linux

Use the system package manager first.

### Debian

Run apt-get install first. Then pip install.

```bash
# a shell comment, not a heading
apt-get install python3
```

## macOS ##

Use Homebrew.

# Usage

Call the command line.
"""


def test_headings_are_never_crossed_and_paths_are_recorded() -> None:
    chunks = _chunk(MARKDOWN, max_tokens=200, overlap_tokens=0, min_tokens=0)
    paths = ["", "Install", "Install > Linux", "Install > Linux > Debian", "Install > macOS", "Usage"]
    assert [c.heading for c in chunks] == paths
    for c in chunks:
        # a heading line may open a chunk but never sit inside one
        assert not any(line.startswith("#") for line in c.text.splitlines()[1:] if not line.startswith("# a shell"))
    debian = chunks[3]
    assert debian.text.startswith("### Debian") and "# a shell comment" in debian.text and debian.text.endswith("```")
    assert chunks[4].text == "## macOS ##\n\nUse Homebrew."


def test_heading_only_sections_yield_no_chunk() -> None:
    chunks = _chunk("# Guide\n\n## Setup\n\nDo this.", min_tokens=0)
    assert [(c.heading, c.text) for c in chunks] == [("Guide > Setup", "## Setup\n\nDo this.")]


def test_without_respect_headings_chunks_may_span_sections() -> None:
    chunks = _chunk(MARKDOWN, max_tokens=200, overlap_tokens=0, min_tokens=0, respect_headings=False)
    assert len(chunks) == 1
    assert chunks[0].heading == "" and chunks[0].text == MARKDOWN.strip()
    small = _chunk(MARKDOWN, max_tokens=12, overlap_tokens=0, min_tokens=0, respect_headings=False)
    assert any("\n# Usage" in c.text for c in small)  # the boundary is crossed somewhere
    for c in small:  # and the heading is the path in effect where the chunk starts
        if c.text.startswith("## Linux"):
            assert c.heading == "Install > Linux"


def test_max_tokens_respected_and_paragraphs_kept_whole_when_they_fit() -> None:
    rng = random.Random(1)
    paragraphs = [" ".join(_sentence(rng, 4) for _ in range(3)) for _ in range(10)]  # 12 tokens each
    text = "\n\n".join(paragraphs)
    chunks = _chunk(text, max_tokens=30, overlap_tokens=0, min_tokens=0)
    _check_invariants(_doc(text), chunks, 30)
    assert [c.text for c in chunks] == ["\n\n".join(paragraphs[i : i + 2]) for i in range(0, 10, 2)]


def _numbered(n: int) -> str:
    return " ".join(f"Sentence number {i} is here." for i in range(n))  # 5 tokens each


def test_overlap_is_whole_trailing_sentences_within_budget() -> None:
    text = _numbered(20)
    chunks = _chunk(text, max_tokens=22, overlap_tokens=11, min_tokens=0)  # packs to 20: 4 sentences
    _check_invariants(_doc(text), chunks, 22)
    assert len(chunks) > 2
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start < prev.end
        shared = text[nxt.start : prev.end]
        spans = split_sentences(shared)
        assert len(spans) == 2 and shared.startswith("Sentence") and shared.endswith(".")  # 10 tokens <= 11
        assert prev.text.endswith(shared)
    assert chunks[-1].end == len(text)


def test_no_overlap_when_a_single_sentence_exceeds_it() -> None:
    chunks = _chunk(_numbered(20), max_tokens=22, overlap_tokens=4, min_tokens=0)
    assert all(nxt.start >= prev.end for prev, nxt in itertools.pairwise(chunks))


def test_long_sentence_without_punctuation_is_split_by_words() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    chunks = _chunk(text, max_tokens=12, overlap_tokens=5, min_tokens=0)
    _check_invariants(_doc(text), chunks, 12)
    assert len(chunks) == 10
    for c in chunks:
        assert c.start == 0 or text[c.start - 1] == " "
        assert c.end == len(text) or text[c.end] == " "
    # word fragments are not sentences, so none is repeated as overlap
    assert " ".join(c.text for c in chunks) == text


def test_a_single_word_longer_than_the_budget_is_cut_by_characters() -> None:
    text = "Short intro. " + "x" * 500 + " Short outro."
    chunks = chunk_document(_doc(text), ChunkingConfig(max_tokens=50, overlap_tokens=0, min_tokens=0), len)
    assert all(c.text == text[c.start : c.end] and len(c.text) <= 50 for c in chunks)
    assert "".join(c.text for c in chunks if c.text.startswith("x") or c.text.endswith("x")).count("x") == 500


def test_sentence_splitting_respects_abbreviations_and_decimals() -> None:
    text = (
        "Dr. Smith met Mr. Jones, e.g. at the U.S. Embassy. It cost 3.50 dollars, i.e. Not much! "
        'See Fig. 3 and No. 5 for details. Was it J. R. Smith? "Yes," he said. Then (finally) we left...'
    )
    got = [text[a:b] for a, b in split_sentences(text)]
    assert got == [
        "Dr. Smith met Mr. Jones, e.g. at the U.S. Embassy.",
        "It cost 3.50 dollars, i.e. Not much!",
        "See Fig. 3 and No. 5 for details.",
        "Was it J. R. Smith?",
        '"Yes," he said.',
        "Then (finally) we left...",
    ]


def test_sentence_splitting_lists_and_lowercase_continuations() -> None:
    text = "Steps:\n1. Install the tool.\n2. Run it.\n- a bullet without period\n- another one. done here"
    got = [text[a:b] for a, b in split_sentences(text)]
    assert got == [
        "Steps:",
        "1. Install the tool.",
        "2. Run it.",
        "- a bullet without period",
        "- another one. done here",
    ]


def test_split_sentences_covers_all_non_space_text() -> None:
    rng = random.Random(2)
    for _ in range(30):
        text = _random_markdown(rng, rng.randint(1, 6))
        spans = split_sentences(text)
        assert all(text[a:b] == text[a:b].strip() and a < b for a, b in spans)
        assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
        assert "".join("".join(text[a:b] for a, b in spans).split()) == "".join(text.split())


def test_tiny_tail_takes_sentences_from_the_previous_chunk() -> None:
    text = _numbered(9)  # 45 tokens; budget 20 packs 4 + 4 + 1 sentences
    plain = _chunk(text, max_tokens=22, overlap_tokens=0, min_tokens=0)
    assert [len(split_sentences(c.text)) for c in plain] == [4, 4, 1]
    balanced = _chunk(text, max_tokens=22, overlap_tokens=0, min_tokens=8)
    assert [len(split_sentences(c.text)) for c in balanced] == [4, 3, 2]
    assert balanced[1].end < balanced[2].start and balanced[2].end == len(text)
    with_overlap = _chunk(text, max_tokens=22, overlap_tokens=5, min_tokens=8)
    _check_invariants(_doc(text), with_overlap, 22)
    assert whitespace_token_counter(text[with_overlap[-2].end : with_overlap[-1].end]) >= 8


def test_min_tokens_does_not_merge_across_headings() -> None:
    chunks = _chunk("# A\n\n" + _numbered(8) + "\n\n# B\n\nOk.", max_tokens=22, overlap_tokens=0, min_tokens=8)
    assert chunks[-1].heading == "B" and chunks[-1].text == "# B\n\nOk."


def test_output_is_deterministic() -> None:
    text = _random_markdown(random.Random(3), 30)
    cfg = ChunkingConfig(max_tokens=40, overlap_tokens=8, min_tokens=5)
    assert chunk_document(_doc(text), cfg, whitespace_token_counter) == chunk_document(
        _doc(text), cfg, whitespace_token_counter
    )


def test_tokens_are_counted_once_per_sentence() -> None:
    text = "\n\n".join(_numbered(6) for _ in range(20))
    calls: list[str] = []

    def counting(s: str) -> int:
        calls.append(s)
        return whitespace_token_counter(s)

    chunk_document(_doc(text), ChunkingConfig(max_tokens=40, overlap_tokens=10), counting)
    assert len(calls) == 120 and all(c.startswith("Sentence") and c.endswith("here.") for c in calls)


def test_one_megabyte_document_is_chunked_linearly() -> None:
    rng = random.Random(4)
    parts, size = [], 0
    while size < 1_000_000:
        p = _random_markdown(rng, 1)
        parts.append(p)
        size += len(p) + 2
    doc = _doc("\n\n".join(parts))
    chunks = chunk_document(doc, ChunkingConfig(), whitespace_token_counter)
    assert len(chunks) > 500
    _check_invariants(doc, chunks, 200)


def test_sentence_spans_in_chunk_merges_fragments() -> None:
    text = "Yes. The system works well today. Ok. Another full sentence here. See below."
    got = [text[a:b] for a, b in sentence_spans_in_chunk(text)]
    assert got == ["Yes. The system works well today. Ok.", "Another full sentence here. See below."]
    assert sentence_spans_in_chunk("Yes. No.") == [(0, 8)]
    assert sentence_spans_in_chunk("") == []


def test_config_is_strict_and_checks_sizes() -> None:
    assert ChunkingConfig().max_tokens == 200
    with pytest.raises(ValidationError):
        ChunkingConfig(max_tokenz=10)
    with pytest.raises(ValidationError, match="overlap_tokens"):
        ChunkingConfig(max_tokens=10, overlap_tokens=10)
    with pytest.raises(ValidationError, match="min_tokens"):
        ChunkingConfig(max_tokens=10, overlap_tokens=0, min_tokens=11)
