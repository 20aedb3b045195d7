"""Finding a gold passage from a reference answer (rag/gold.py), on hand-built chunks with real offsets."""

from __future__ import annotations

import pytest

from tailorlm.eval.metrics.qa import normalize_answer
from tailorlm.rag.gold import (
    LONG_ANSWER_TOKENS,
    MIN_TOKEN_RECALL,
    Passages,
    Segment,
    find_gold,
    normalize,
    normalize_tokens,
    runs,
)
from tailorlm.rag.types import Chunk

pytestmark = pytest.mark.unit

PAPER = (
    "Abstract. We study lichens on basalt. "
    "The samples were collected at 2,100 metres on the northern slope during the dry season of 2019. "
    "Growth rates were measured every month with calibrated photographs of each colony. "
    "The median radial growth was 0.8 mm per year, lower than at sea level. "
    "Conclusions follow."
)


def cut(doc_id: str, text: str, bounds: list[tuple[str, str]]) -> list[Chunk]:
    """Chunks of ``text`` from the first occurrence of each (start phrase, end phrase), end phrase included, so
    the offsets are real: ``chunk.text == text[start:end]``. Overlaps are allowed, as the chunker makes them."""
    out = []
    for i, (first, last) in enumerate(bounds):
        start = text.index(first)
        end = text.index(last, start) + len(last)
        out.append(Chunk(doc_id, i, text[start:end], start, end))
    return out


# Three chunks; the second repeats the first's last sentence (overlap), and a sentence straddles chunks 1 and 2.
CHUNKS = cut(
    "paper.txt",
    PAPER,
    [
        ("Abstract.", "dry season of 2019."),
        ("The samples", "calibrated photographs"),
        ("of each colony.", "Conclusions follow."),
    ],
)


def test_chunks_are_real_spans() -> None:
    assert all(PAPER[c.start : c.end] == c.text for c in CHUNKS)
    assert CHUNKS[1].start < CHUNKS[0].end  # overlapping, as the chunker's sentence overlap makes them


def test_normalization_is_squad_for_ascii_and_keeps_offsets() -> None:
    for text in ["The Cat's hat.", "  an  apple, a pear; THE end ", "(U.S.A.) -- 1,000 km!"]:
        assert normalize(text) == normalize_answer(text)
    text = "The Growth-rate, measured."
    assert normalize_tokens(text) == [("growthrate", 4), ("measured", 17)]


def test_exact_match_wins_and_takes_the_best_ranked_chunk() -> None:
    match = find_gold(["dry season of 2019"], CHUNKS)
    assert match is not None
    # In the overlap both chunk 0 and chunk 1 hold it; rank order (here: chunk order) picks the first.
    assert (match.level, match.chunk_ids, match.recall) == ("exact", ("paper.txt#0",), 1.0)
    reranked = find_gold(["dry season of 2019"], [CHUNKS[1], CHUNKS[0]])
    assert reranked is not None and reranked.chunk_ids == ("paper.txt#1",)


def test_normalized_match() -> None:
    match = find_gold(["The median radial growth was 0.8 mm per year"], CHUNKS)
    assert match is not None and match.level == "exact"
    match = find_gold(["Median radial growth WAS: 0.8 mm per year!"], CHUNKS)
    assert match is not None
    assert (match.level, match.chunk_ids) == ("normalized", ("paper.txt#2",))
    # Whole tokens only: "asalt" is inside "basalt", but not a token of it.
    assert find_gold(["asalt"], CHUNKS[:1], levels=("normalized",)) is None


def test_an_answer_across_a_chunk_boundary_matches_through_neighbours() -> None:
    answer = "Growth rates were measured every month with calibrated photographs of each colony"
    assert not any(normalize(answer) in normalize(c.text) for c in CHUNKS)  # no single chunk holds it
    match = find_gold([answer], CHUNKS)
    assert match is not None
    # Chunk 1 holds "growth rates ... calibrated photographs" (9 tokens), chunk 2 "of each colony": 1 is the oracle.
    assert (match.level, match.chunk_ids) == ("neighbours", ("paper.txt#1", "paper.txt#2"))


def test_stitching_does_not_repeat_the_overlap() -> None:
    seg = Segment.of(CHUNKS)
    assert seg.norm.strip() == normalize(PAPER)
    assert len(seg.offsets) == len(normalize(PAPER).split())


def test_neighbours_need_adjacent_chunks_of_one_document() -> None:
    answer = "Growth rates were measured every month with calibrated photographs of each colony"
    other = [Chunk("other.txt", 2, c.text, c.start, c.end) for c in CHUNKS[2:]]
    assert find_gold([answer], [CHUNKS[1], *other], levels=("neighbours",)) is None
    gap = [CHUNKS[0], CHUNKS[2]]  # positions 0 and 2: not adjacent
    assert runs(gap) == []
    assert runs(CHUNKS) == [(0, 1), (1, 2)]


def test_long_paraphrased_answer_matches_by_token_recall() -> None:
    # An edited copy of the sentence: two of its 13 normalized words changed (11/13 = 0.85 recall).
    answer = "The samples were gathered at 2,100 metres on the northern slope in the dry season of 2019"
    assert len(normalize(answer).split()) >= LONG_ANSWER_TOKENS
    match = find_gold([answer], CHUNKS)
    assert match is not None and match.level == "overlap"
    assert match.chunk_ids == ("paper.txt#0",) and MIN_TOKEN_RECALL <= match.recall < 1.0


def test_long_answer_straddling_a_boundary_with_edits_matches_a_pair() -> None:
    answer = "growth rates were measured monthly using calibrated photographs of every colony"
    match = find_gold([answer], CHUNKS)
    assert match is not None and match.level == "overlap"
    assert match.chunk_ids == ("paper.txt#1", "paper.txt#2")


def test_a_passage_on_the_topic_is_not_gold() -> None:
    # Same words as the paper (lichens, growth, slope, samples) but not its sentence: recall well under the bar.
    answer = "The lichens on the southern slope grew faster than the samples from the valley floor"
    assert find_gold([answer], CHUNKS) is None
    # Short answers never match by overlap: a few shared words are most of a short answer.
    assert find_gold(["median growth of lichens"], CHUNKS) is None


def test_no_match() -> None:
    assert find_gold(["photosynthesis in deep-sea vents"], CHUNKS) is None
    assert find_gold([], CHUNKS) is None
    assert find_gold(["", "  ", "..."], CHUNKS) is None


def test_later_answers_are_tried_and_a_precise_level_beats_an_earlier_answer() -> None:
    match = find_gold(["nothing like this", "0.8 mm per year"], CHUNKS)
    assert match is not None and (match.answer, match.level) == ("0.8 mm per year", "exact")
    match = find_gold(["MEDIAN RADIAL GROWTH", "lower than at sea level"], CHUNKS)
    assert match is not None and (match.answer, match.level) == ("lower than at sea level", "exact")


def test_unicode() -> None:
    text = "Die Flechte „Lecanora“ wächst langsam – etwa 0,8 mm pro Jahr. Café ﬁeld notes."
    chunk = Chunk("de.txt", 0, text, 0, len(text))
    # Curly quotes and dashes are punctuation; NFKC folds the "ﬁ" ligature; decomposed accents compose.
    decomposed = "cafe\u0301 field notes"
    for answer, level in [
        ("wächst langsam", "exact"),
        ("WÄCHST LANGSAM", "normalized"),
        ('Flechte "Lecanora" wächst', "normalized"),
        ("langsam etwa 0,8 mm", "normalized"),
        (decomposed, "normalized"),
    ]:
        match = find_gold([answer], [chunk])
        assert match is not None and match.level == level, answer
    # Non-Latin scripts: whole words, so a word is not found inside a longer one.
    ja = Chunk("ja.txt", 0, "地衣類 は 玄武岩 の 上 で 育つ", 0, 16)
    assert find_gold(["玄武岩 の 上"], [ja]) is not None
    assert find_gold(["武岩"], [ja], levels=("normalized",)) is None


def test_a_scan_takes_only_unambiguous_matches() -> None:
    other = cut("notes.txt", "Field notes. The samples were dried. Rates were low.", [("Field", "Rates were low.")])
    scan = Passages.of([*CHUNKS, *other], ranked=False)
    # In two documents: ambiguous without a retrieval rank to settle it.
    assert find_gold(["The samples"], scan) is None
    # In one chunk of one document, or the overlap of two adjacent ones: fine.
    match = find_gold(["dry season of 2019"], scan)
    assert match is not None and match.chunk_ids == ("paper.txt#0", "paper.txt#1")
    match = find_gold(["0.8 mm per year"], scan)
    assert match is not None and match.chunk_ids == ("paper.txt#2",)
    answer = "growth rates were measured every month with calibrated photographs of each colony"
    match = find_gold([answer], scan)
    assert match is not None and match.level == "neighbours"
    assert match.chunk_ids == ("paper.txt#1", "paper.txt#2")
