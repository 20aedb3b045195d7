"""Token-aware recursive chunking with exact character offsets.

A document is cut at Markdown headings into sections, a section into paragraphs (blank lines), a paragraph into
sentences, and a sentence too long for one chunk into words. The pieces are packed greedily up to ``max_tokens``,
keeping a paragraph whole when it fits, and each chunk starts with the last whole sentences of the one before
(``overlap_tokens``), so a fact that straddles a boundary can still be retrieved from either side.

This is LangChain's RecursiveCharacterTextSplitter / LlamaIndex's SentenceSplitter, except that every piece is a span
of the original text and never a copy: ``chunk.text == doc.text[chunk.start:chunk.end]``, so a citation points at the
exact characters. Everything below therefore works on ``(start, end)`` offsets into ``doc.text``.

Tokens are counted once per sentence (or word) and summed. Re-tokenizing a growing chunk would be quadratic, and a
tokenizer run over whitespace-joined pieces gives within a token or two of the sum of their counts, so we pack to
``max_tokens - 2``. ``count_tokens`` must not add special tokens ([CLS]/[SEP]); the embedder adds those once.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field, model_validator

from tailorlm.core.config import StrictModel
from tailorlm.rag.types import Chunk, Document

TokenCounter = Callable[[str], int]

# A tokenizer over a concatenation differs from the sum over its pieces by a token or two (BPE merges across the
# join); this is the headroom we leave for it below max_tokens.
_CONCAT_SLACK = 2
# sentence_spans_in_chunk: a "sentence" with fewer words than this is merged into its neighbour.
_MIN_SENTENCE_WORDS = 3


class ChunkingConfig(StrictModel):
    """How documents are cut into chunks. Token counts use the embedder's tokenizer."""

    max_tokens: int = Field(
        200, ge=1, description="Tokens per chunk at most. MiniLM reads 256; leave room for special tokens and slack."
    )
    overlap_tokens: int = Field(
        30, ge=0, description="Tokens of whole trailing sentences repeated from the previous chunk (0: none)."
    )
    min_tokens: int = Field(
        20,
        ge=0,
        description="A section's final chunk with less new text than this takes sentences from the one before.",
    )
    respect_headings: bool = Field(True, description="Never let a chunk span two Markdown sections.")

    @model_validator(mode="after")
    def _check_sizes(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be < max_tokens ({self.max_tokens})")
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must be <= max_tokens ({self.max_tokens})")
        return self


def whitespace_token_counter(text: str) -> int:
    """Whitespace-separated words: the fallback counter for tests and for runs without the embedder's tokenizer."""
    return len(text.split())


# --- spans -------------------------------------------------------------------------------------------------


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    """``text[a:b].strip()`` as offsets, without copying the slice."""
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _segments(pattern: re.Pattern[str], text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """The non-blank stripped spans of ``text[lo:hi]`` between matches of ``pattern``."""
    out = []
    a = lo
    for m in pattern.finditer(text, lo, hi):
        s, e = _strip(text, a, m.start())
        if s < e:
            out.append((s, e))
        a = m.end()
    s, e = _strip(text, a, hi)
    if s < e:
        out.append((s, e))
    return out


# --- sentences ---------------------------------------------------------------------------------------------

# A candidate sentence end: terminal punctuation (plus closing quotes/brackets) before whitespace; or a line break
# before a list item, because Markdown lists rarely end their items with a period. The lookahead leaves the
# whitespace unconsumed so that a rejected candidate cannot swallow the list-item break that follows it.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|\n(?=[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t])")
_OPENERS = "\"'“‘(["
# Lowercased, without the final period. Deliberately not "etc": it ends sentences as often as not.
# fmt: off
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "al", "fig", "figs", "eq", "eqs", "sec", "ch",
    "vol", "pp", "ed", "eds", "approx", "dept", "est", "inc", "ltd", "co", "corp", "ph.d",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})
# fmt: on
_INITIALS = re.compile(r"(?:[a-z]\.)+[a-z]")  # e.g, i.e, u.s, u.s.a


def _ends_sentence(text: str, p: int, q: int, lo: int, hi: int) -> bool:
    """Whether the punctuation at ``text[p:q]`` ends a sentence (the whitespace after it is known to be there)."""
    n = q
    while n < hi and text[n].isspace():
        n += 1
    if n >= hi:
        return False  # end of the range: nothing to cut
    nxt = text[n]
    if not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
        return False  # "e.g. python", "3 p.m. on" — the next word does not start a sentence
    if text[p] != "." or text[p + 1 : q].strip("\"'”’)]"):
        return True  # "!", "?", "..." are never abbreviations
    # The word before the period, looked up at most 40 characters back so a pathological line stays linear.
    w = p
    while w > lo and w > p - 40 and not text[w - 1].isspace():
        w -= 1
    word = text[w:p].lstrip(_OPENERS).lower()
    if word in _ABBREVIATIONS or _INITIALS.fullmatch(word) or (len(word) == 1 and word.isalpha()):
        return False  # "Dr. Smith", "U.S. Army", "J. Smith"
    if word == "no" and nxt.isdigit():
        return False  # "No. 5"
    if word.isdigit() and len(word) <= 3:
        # "1. Install" at the start of a line is a list marker, not a sentence that ends in a number.
        j = w
        while j > lo and text[j - 1] in " \t":
            j -= 1
        if j == lo or text[j - 1] == "\n":
            return False
    return True


def _sentence_spans(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    cuts = [lo]
    for m in _SENTENCE_END.finditer(text, lo, hi):
        if m.group(0).startswith("\n"):
            cuts.append(m.start())
        elif _ends_sentence(text, m.start(), m.end(), lo, hi):
            cuts.append(m.end())
    cuts.append(hi)
    spans = []
    for a, b in itertools.pairwise(cuts):
        s, e = _strip(text, a, b)
        if s < e:
            spans.append((s, e))
    return spans


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences in ``text``, stripped; together they cover all its non-space text.

    A regex heuristic, not a parser: a sentence ends at ``.``/``!``/``?`` followed by whitespace and an uppercase
    letter, digit or quote, unless the word before the period is a known abbreviation ("e.g.", "Dr.", "U.S."),
    an initial, or a list number. Decimals ("3.14") never match because no whitespace follows the period.
    """
    return _sentence_spans(text, 0, len(text))


def sentence_spans_in_chunk(chunk_text: str) -> list[tuple[int, int]]:
    """The spans the embedder embeds one by one for max-sim rescoring: ``split_sentences`` with fragments merged.

    Every sentence of every chunk gets a vector, and a fragment such as "Yes." or "See below." embeds to a generic
    point that sits close to many queries: it would win max-sim for chunks that do not answer, and it costs an
    embedding for nothing. A sentence under three words therefore joins the sentence before it (the first one
    joins the sentence after), so each span still says something on its own.
    """
    out: list[tuple[int, int]] = []
    carry: int | None = None  # start of a short leading fragment waiting for the sentence after it
    last_end = 0
    for a, b in split_sentences(chunk_text):
        last_end = b
        if carry is not None:
            a, carry = carry, None
        if len(chunk_text[a:b].split()) >= _MIN_SENTENCE_WORDS:
            out.append((a, b))
        elif out:
            out[-1] = (out[-1][0], b)
        else:
            carry = a
    if carry is not None:  # the whole text is one short fragment
        out.append((carry, last_end))
    return out


# --- sections ----------------------------------------------------------------------------------------------

# A fence line or an ATX heading line ("#" to "######" then a space or the end of the line; "#tag" is not one).
_HEADING_OR_FENCE = re.compile(r"^ {0,3}(?:(?P<fence>```|~~~)|(?P<hashes>#{1,6})(?=[ \t]|$))[^\n]*", re.M)
_CLOSING_HASHES = re.compile(r"(?:^|\s)#+$")  # "## Title ##" -> "Title"; "# C#" keeps its "#"


@dataclass(frozen=True)
class _Section:
    start: int  # the heading line's start (or 0 for the text before the first heading)
    body: int  # where the text under the heading starts (== start when there is no heading line)
    end: int
    path: str  # "Install > Linux"


# Plain-text headings (man pages, papers, text exported from PDF or Word): a line at column 0 that starts a
# paragraph and reads as a title: numbered ("2.1 Results", "IV. METHODS") or all capitals ("DESCRIPTION").
_PLAIN_HEADING = re.compile(
    r"(?:\A|(?<=\n\n))(?P<title>(?P<num>(?:\d{1,2}(?:\.\d{1,2}){0,3}\.?|[IVX]{1,5}\.)[ \t]+)?[A-Z][^\n]{1,78})$",
    re.M,
)
_NOT_A_TITLE_END = (".", ",", ";", ":", "!", "?")


def _plain_heads(text: str) -> list[tuple[int, int, int, str]]:
    """Headings of a text without Markdown ones: conservative, since a false heading only splits a section."""
    heads = []
    for m in _PLAIN_HEADING.finditer(text):
        title = m.group("title").rstrip()
        words = title.split()
        if title.endswith(_NOT_A_TITLE_END) or len(words) > 10:
            continue
        letters = [c for c in title if c.isalpha()]
        numbered = m.group("num") is not None and len(words) >= 2
        if not numbered and not (len(letters) >= 3 and all(c.isupper() for c in letters)):
            continue
        num = (m.group("num") or "").strip().rstrip(".")
        level = num.count(".") + 1 if numbered and num[:1].isdigit() else 1  # "2.1" sits under "2"
        heads.append((m.start("title"), m.end("title"), level, title))
    return heads


def _sections(text: str) -> list[_Section]:
    """Markdown sections by ATX heading, skipping '#' lines inside fenced code (shell comments are not headings);
    in a text with no Markdown heading, plain-text headings (``_plain_heads``)."""
    heads: list[tuple[int, int, int, str]] = []  # (line start, line end, level, title)
    fence: str | None = None
    for m in _HEADING_OR_FENCE.finditer(text):
        marker = m.group("fence")
        if marker:
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
        elif fence is None:
            title = _CLOSING_HASHES.sub("", text[m.end("hashes") : m.end()].strip()).strip()
            heads.append((m.start(), m.end(), len(m.group("hashes")), title))
    if not heads:
        heads = _plain_heads(text)

    sections = []
    first = heads[0][0] if heads else len(text)
    if first > 0:
        sections.append(_Section(0, 0, first, ""))
    stack: list[tuple[int, str]] = []  # (level, title) of the headings above the current one
    for i, (start, body, level, title) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        sections.append(_Section(start, body, end, " > ".join(t for _, t in stack if t)))
    return sections


# --- units and packing -------------------------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")  # a blank line, possibly holding spaces (or a CR)


class _Units:
    """The atoms chunks are made of: sentences, or words of an over-long sentence, with token prefix sums."""

    def __init__(self) -> None:
        self.start: list[int] = []
        self.end: list[int] = []
        self.sentence: list[bool] = []  # a whole sentence, so it may be repeated as overlap
        self.cum: list[int] = [0]  # cum[i] = tokens in units [0, i)

    def __len__(self) -> int:
        return len(self.start)

    def add(self, a: int, b: int, n: int, sentence: bool) -> None:
        self.start.append(a)
        self.end.append(b)
        self.sentence.append(sentence)
        self.cum.append(self.cum[-1] + n)

    def tokens(self, i: int, j: int) -> int:
        return self.cum[j] - self.cum[i]


def _add_span(units: _Units, text: str, a: int, b: int, count: TokenCounter, budget: int, sentence: bool) -> None:
    """Add ``text[a:b]`` as one unit, or recursively split: words, then halves of a word (a URL, a base64 blob)."""
    n = count(text[a:b])
    if n <= budget or b - a <= 1:
        units.add(a, b, n, sentence)
        return
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text[a:b])]
    if len(words) > 1:
        for s, e in words:
            _add_span(units, text, a + s, a + e, count, budget, False)
    else:  # one word over budget: bisect by characters (O(n log n) characters counted, and only for such words)
        mid = (a + b) // 2
        _add_span(units, text, a, mid, count, budget, False)
        _add_span(units, text, mid, b, count, budget, False)


def _add_section(
    units: _Units, pieces: list[tuple[int, int]], text: str, sec: _Section, count: TokenCounter, budget: int
) -> bool:
    """Append the section's units and packing pieces; False when it has no text under its heading."""
    if sec.body > sec.start:  # the heading line: its own piece, so it opens the section's first chunk
        a, b = _strip(text, sec.start, sec.body)
        i = len(units)
        _add_span(units, text, a, b, count, budget, False)
        pieces.extend((j, j + 1) for j in range(i, len(units)))
    n_head = len(units)
    for pa, pb in _segments(_PARAGRAPH_BREAK, text, sec.body, sec.end):
        i0 = len(units)
        for sa, sb in _sentence_spans(text, pa, pb):
            _add_span(units, text, sa, sb, count, budget, True)
        # Recursive splitting: a paragraph that fits is one piece (kept whole); one that does not is its sentences.
        if units.tokens(i0, len(units)) <= budget:
            pieces.append((i0, len(units)))
        else:
            pieces.extend((j, j + 1) for j in range(i0, len(units)))
    return len(units) > n_head


def _overlap_start(units: _Units, s: int, e: int, overlap: int) -> int:
    """First unit of the trailing whole sentences of chunk ``[s, e)`` that total at most ``overlap`` tokens."""
    j = e
    # j - 1 > s: never repeat the whole chunk; stop at a word fragment (overlap is at sentence granularity).
    while j - 1 > s and units.sentence[j - 1] and units.tokens(j - 1, e) <= overlap:
        j -= 1
    return j


def _pack(units: _Units, pieces: list[tuple[int, int]], budget: int, cfg: ChunkingConfig) -> list[tuple[int, int]]:
    """Greedy packing of contiguous pieces into unit ranges ``[s, e)``; consecutive ranges overlap by whole sentences.

    Linear: each piece is looked at once and token sums are prefix-sum differences.
    """
    chunks: list[tuple[int, int]] = []
    cur_s = cur_e = new_s = 0  # current chunk is [cur_s, cur_e); [cur_s, new_s) is overlap from the previous one
    for i0, i1 in pieces:
        need = units.tokens(i0, i1)
        if cur_e > new_s and units.tokens(cur_s, cur_e) + need > budget:
            chunks.append((cur_s, cur_e))
            cur_s, new_s = _overlap_start(units, cur_s, cur_e, cfg.overlap_tokens), cur_e
        while cur_s < new_s and units.tokens(cur_s, cur_e) + need > budget:
            cur_s += 1  # new text wins over overlap: drop the oldest overlap sentence
        cur_e = i1
    if cur_e > new_s:
        chunks.append((cur_s, cur_e))
    if len(chunks) >= 2:
        _rebalance_tail(units, chunks, budget, cfg)
    return chunks


def _rebalance_tail(units: _Units, chunks: list[tuple[int, int]], budget: int, cfg: ChunkingConfig) -> None:
    """Give a tiny final chunk (new text < min_tokens) enough sentences from the previous chunk, in place.

    Merging it into the previous chunk never fits after greedy packing (that chunk was closed precisely because
    the next piece did not fit), so instead the boundary between the two moves back until the tail has
    ``min_tokens`` of its own text; the previous chunk shrinks by as much and stays within budget.
    """
    (ps, pe), (_, le) = chunks[-2], chunks[-1]
    if units.tokens(pe, le) >= cfg.min_tokens:
        return
    floor = chunks[-3][1] if len(chunks) >= 3 else ps  # keep some of the previous chunk's own (non-overlap) text
    k = pe
    while k > floor + 1 and units.tokens(k, le) < cfg.min_tokens:
        k -= 1
    if k == pe or not cfg.min_tokens <= units.tokens(k, le) <= budget:
        return
    ov = _overlap_start(units, ps, k, cfg.overlap_tokens)
    while ov < k and units.tokens(ov, le) > budget:
        ov += 1
    chunks[-2:] = [(ps, k), (ov, le)]


# --- entry point -------------------------------------------------------------------------------------------


def chunk_document(doc: Document, config: ChunkingConfig, count_tokens: TokenCounter) -> list[Chunk]:
    """Cut ``doc`` into chunks of at most ``config.max_tokens`` tokens (as ``count_tokens`` counts them).

    Each chunk is a stripped exact slice of ``doc.text``, indexed 0..n-1 in text order, with ``heading`` set to the
    Markdown heading path above its start. With ``respect_headings`` a section whose heading has no text under it
    yields no chunk: its title lives on in its subsections' heading paths.
    """
    text = doc.text
    if not text.strip():
        return []
    budget = max(1, config.max_tokens - _CONCAT_SLACK)
    sections = _sections(text)
    spans: list[tuple[int, int, str]] = []  # (start, end, heading)

    if config.respect_headings:
        for sec in sections:
            units, pieces = _Units(), []
            if _add_section(units, pieces, text, sec, count_tokens, budget):
                spans.extend(
                    (units.start[s], units.end[e - 1], sec.path) for s, e in _pack(units, pieces, budget, config)
                )
    else:
        units, pieces = _Units(), []
        for sec in sections:
            _add_section(units, pieces, text, sec, count_tokens, budget)
        starts = [sec.start for sec in sections]
        for s, e in _pack(units, pieces, budget, config):
            a = units.start[s]
            i = bisect.bisect_right(starts, a) - 1
            spans.append((a, units.end[e - 1], sections[i].path if i >= 0 else ""))

    return [
        Chunk(doc_id=doc.doc_id, index=i, text=text[a:b], start=a, end=b, heading=heading)
        for i, (a, b, heading) in enumerate(spans)
    ]
