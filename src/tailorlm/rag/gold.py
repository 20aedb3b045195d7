"""Find a question's gold passage from its reference answer, for training data that names no gold document.

RAFT training (``sft_data.py``) needs, for each question, the passage that holds its answer. When the records carry
``gold`` spans or ``doc_ids`` that is a lookup; when they carry only the question and reference answers, the gold
passage is the chunk that contains an answer, tried in order of precision:

1. ``exact``: the answer string, verbatim, inside one chunk;
2. ``normalized``: the answer inside one chunk after SQuAD-style normalization (lowercase, punctuation and the
   articles a/an/the dropped, whitespace collapsed), extended to Unicode: NFKC first (ligatures, full-width forms,
   composed accents) and Unicode punctuation (curly quotes, dashes) dropped along with ASCII punctuation;
3. ``neighbours``: the normalized answer across a chunk boundary, in the text of adjacent chunks of one document
   stitched by their character offsets (chunks overlap, so plain concatenation would repeat the overlap). Only an
   answer longer than the overlap can straddle a boundary: sentence-length answers from long documents;
4. ``overlap``, long answers only (``LONG_ANSWER_TOKENS``+ normalized tokens): a chunk, or two adjacent chunks,
   holding at least ``MIN_TOKEN_RECALL`` of the answer's tokens (ROUGE-1 recall: the answer's tokens as a
   multiset). Users write long reference answers by lightly editing a sentence of the source; this level finds
   that sentence's chunk, never a passage that merely shares the topic (see the constants for why these values).

Everything here is pure: chunks in, a :class:`GoldMatch` out. Which chunks to search (retrieved candidates and
their neighbours, or the whole index) is the caller's choice (``sft_data.py``).
"""

from __future__ import annotations

import re
import string
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

Level = Literal["exact", "normalized", "neighbours", "overlap"]
LEVELS: tuple[Level, ...] = ("exact", "normalized", "neighbours", "overlap")
STRICT: tuple[Level, ...] = ("exact", "normalized", "neighbours")

# The overlap level is for sentence-length answers only. Below 8 tokens a few shared words are most of the answer
# and any passage on the topic reaches a high recall by chance ("the model uses attention" vs. every chunk of a
# transformer paper); 8 normalized tokens is a short sentence, past the 1-4 token factoid answers of SQuAD-style
# data, which the strict levels handle.
LONG_ANSWER_TOKENS = 8
# At least 80% of the answer's tokens must appear in the passage: with 8+ tokens, at most one word in five may be
# reworded, inflected or dropped. The value is the round "one word in five" rule, chosen before looking at data
# and then checked (not fitted) on XQuAD-en: of its 1,153 sentences of 8+ tokens, none reaches 0.8 against the
# best other paragraph of its own article (same topic; median 0.33, p95 0.55) or of any other article (p95 0.53),
# so near misses sit far below it. It errs on precision: copies with one word in five replaced at random reach a
# median of 0.83, so a heavily reworded answer can be missed (0.7 would catch 91% of those, and start admitting
# false passages: 0.5% of sentences). A false gold passage teaches the model to cite the wrong source; a missed one
# only costs a training record. `scripts/check_gold_recall.py` reproduces these figures.
MIN_TOKEN_RECALL = 0.8
# Adjacent chunks stitched for the neighbours and overlap levels. Two cover any answer shorter than a chunk
# (200 tokens by default); longer "answers" are passages, not answers.
MAX_STITCH = 2

_PUNCT = frozenset(string.punctuation)
_ARTICLES = frozenset({"a", "an", "the"})
_WORD = re.compile(r"\S+")
_POSITION = re.compile(r"#(\d+)$")


class ChunkLike(Protocol):
    """What the matcher reads from a chunk: ``Chunk`` and ``StoredChunk`` both fit."""

    @property
    def chunk_id(self) -> str: ...
    @property
    def doc_id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


@dataclass(frozen=True)
class GoldMatch:
    """How a gold passage was found. ``chunk_ids`` starts with the oracle passage (the chunk holding most of the
    answer); the rest hold part of it (the other side of a boundary) and must not be shown as distractors."""

    level: Level
    chunk_ids: tuple[str, ...]
    answer: str
    recall: float = 1.0


def _is_punct(ch: str) -> bool:
    return ch in _PUNCT or unicodedata.category(ch).startswith("P")


@lru_cache(maxsize=65_536)
def _norm_word(word: str) -> tuple[str, ...]:
    """One whitespace-separated word → its normalized tokens (none, one, or several when NFKC splits it).

    Normalizing word by word gives the same tokens as normalizing the whole text (no step crosses whitespace),
    and keeps each token's offset in the original text."""
    word = unicodedata.normalize("NFKC", word).lower()
    word = "".join(ch for ch in word if not _is_punct(ch))
    return tuple(t for t in word.split() if t not in _ARTICLES)


def normalize_tokens(text: str) -> list[tuple[str, int]]:
    """The normalized tokens of ``text``, each with the character offset of the word it came from."""
    return [(tok, m.start()) for m in _WORD.finditer(text) for tok in _norm_word(m.group())]


def normalize(text: str) -> str:
    """The normalized text (tokens joined by single spaces): SQuAD's normalization, Unicode-aware."""
    return " ".join(tok for tok, _ in normalize_tokens(text))


def position(chunk: ChunkLike) -> int | None:
    """The chunk's index within its document, from its id (``doc_id#index``); None for ids of another form."""
    if not chunk.chunk_id.startswith(f"{chunk.doc_id}#"):
        return None
    m = _POSITION.search(chunk.chunk_id)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Segment:
    """Normalized text of one chunk or of adjacent chunks stitched together, with each token's document offset.

    ``norm`` is padded (" tok tok ") so that a padded answer matches on whole tokens only."""

    chunks: tuple[ChunkLike, ...]
    norm: str
    offsets: array  # int32 document offset of each token's word, in token order

    @classmethod
    def of(cls, chunks: Sequence[ChunkLike]) -> Segment:
        """Chunks of one document in order. A later chunk contributes only the text past the earlier ones' end:
        chunks overlap, and the overlap must appear once."""
        tokens: list[str] = []
        offsets = array("i")
        covered = -1
        for c in chunks:
            for tok, off in normalize_tokens(c.text):
                if c.start + off >= covered:
                    tokens.append(tok)
                    offsets.append(c.start + off)
            covered = max(covered, c.end)
        return cls(tuple(chunks), f" {' '.join(tokens)} ", offsets)

    def token_index(self, char_pos: int) -> int:
        """The token a padded match found at ``char_pos`` starts with (the number of separators before it)."""
        return self.norm.count(" ", 0, char_pos + 1) - 1

    def holders(self, first: int, n: int) -> list[tuple[int, ChunkLike]]:
        """(tokens held, chunk) for each chunk holding part of tokens ``first .. first+n``, most first."""
        span = self.offsets[first : first + n]
        held = [(sum(c.start <= off < c.end for off in span), c) for c in self.chunks]
        ranked = sorted(enumerate(held), key=lambda ih: (-ih[1][0], ih[0]))  # stable: earlier chunk on ties
        return [h for _, h in ranked if h[0] > 0]


def runs(chunks: Iterable[ChunkLike], max_len: int | None = MAX_STITCH) -> list[tuple[int, ...]]:
    """Windows of 2 to ``max_len`` adjacent chunks (consecutive positions in one document; None: each whole run
    of adjacent chunks), as indices into ``chunks``, ordered by their best-ranked (lowest-index) chunk."""
    by_doc: dict[str, dict[int, int]] = {}
    for i, c in enumerate(chunks):
        p = position(c)
        if p is not None:
            by_doc.setdefault(c.doc_id, {}).setdefault(p, i)
    out: list[tuple[int, ...]] = []
    for doc in by_doc.values():
        ordered = sorted(doc)
        run: list[int] = []
        for j, p in enumerate(ordered):
            if j and p != ordered[j - 1] + 1:
                out.extend(_windows(run, max_len))
                run = []
            run.append(doc[p])
        out.extend(_windows(run, max_len))
    return sorted(out, key=min)


def _windows(run: list[int], max_len: int | None) -> list[tuple[int, ...]]:
    if len(run) < 2:
        return []
    if max_len is None:
        return [tuple(run)]
    return [tuple(run[i : i + n]) for n in range(2, max_len + 1) for i in range(len(run) - n + 1)]


@dataclass(frozen=True)
class Passages:
    """Chunks prepared for matching: normalized once, so a scan of the whole index serves every question.

    ``ranked``: the chunks come best first (retrieved candidates and their neighbours), and rank settles which of
    several matching chunks is gold. Unranked (a scan of the index), a match counts only where it is unambiguous:
    one chunk, or the overlap of two adjacent ones, in one document."""

    chunks: tuple[ChunkLike, ...]
    segments: tuple[Segment, ...]  # one per chunk
    stitched: tuple[tuple[int, ...], ...]  # adjacent windows (ranked) or whole runs (unranked), as chunk indices
    stitched_segments: tuple[Segment, ...]
    pairs: tuple[tuple[int, int], ...]  # adjacent pairs, for the overlap level
    ranked: bool
    # token → indices of the chunks holding it: the overlap level reads only chunks sharing enough of the answer's
    # tokens (a scan of 5.9k chunks: 0.8 s per unmatched long answer without it, 50 ms with it)
    postings: dict[str, array]

    @classmethod
    def of(cls, chunks: Sequence[ChunkLike], *, ranked: bool = True) -> Passages:
        chunks = tuple(chunks)
        segments = tuple(Segment.of([c]) for c in chunks)
        stitched = tuple(runs(chunks, MAX_STITCH if ranked else None))
        pairs = tuple((w[0], w[1]) for w in runs(chunks, 2))
        postings: dict[str, array] = {}
        for i, seg in enumerate(segments):
            for tok in set(seg.norm.split()):
                postings.setdefault(tok, array("i")).append(i)
        return cls(
            chunks,
            segments,
            stitched,
            tuple(Segment.of([chunks[i] for i in w]) for w in stitched),
            pairs,
            ranked,
            postings,
        )


def token_recall(answer: Sequence[str], passage: Counter[str]) -> float:
    """Share of the answer's tokens (as a multiset) found in the passage: ROUGE-1 recall."""
    if not answer:
        return 0.0
    return sum(min(n, passage[t]) for t, n in Counter(answer).items()) / len(answer)


def find_gold(
    answers: Sequence[str],
    chunks: Passages | Sequence[ChunkLike],
    *,
    levels: Sequence[Level] = LEVELS,
    long_answer_tokens: int = LONG_ANSWER_TOKENS,
    min_recall: float = MIN_TOKEN_RECALL,
) -> GoldMatch | None:
    """The gold passage for ``answers`` among ``chunks`` (best-ranked first, or prepared :class:`Passages`), at the
    most precise level that finds one; None when no level does.

    Within a level, an earlier answer and then a better-ranked chunk win: retrieval rank settles which of several
    passages holding a short answer is gold. An unranked scan accepts only unambiguous matches (see ``Passages``).
    """
    p = chunks if isinstance(chunks, Passages) else Passages.of(chunks)
    normed = [(a, normalize(a)) for a in (a.strip() for a in answers if a) if a]
    in_some_chunk: set[str] = set()  # answers that single chunks hold, but ambiguously (a scan only)
    for level in levels:
        for answer, norm in normed:
            if level == "exact":
                found = [i for i, c in enumerate(p.chunks) if answer in c.text]
            elif not norm:
                continue
            elif level == "normalized":
                found = [i for i, s in enumerate(p.segments) if f" {norm} " in s.norm]
            elif level == "neighbours":
                if answer in in_some_chunk:
                    continue  # a scan found it whole in several chunks: one more place across a boundary won't help
                if (ids := _across(norm, p)) is not None:
                    return GoldMatch("neighbours", ids, answer)
                continue
            else:
                if (over := _overlap(norm, p, long_answer_tokens, min_recall)) is not None:
                    return GoldMatch("overlap", over[0], answer, over[1])
                continue
            if found and (p.ranked or _one_place([p.chunks[i] for i in found])):
                keep = found[:1] if p.ranked else found
                return GoldMatch(level, tuple(p.chunks[i].chunk_id for i in keep), answer)
            if found:
                in_some_chunk.add(answer)
    return None


def _one_place(found: Sequence[ChunkLike]) -> bool:
    """One chunk, or two adjacent chunks of one document (the answer lies in their overlap)."""
    if len(found) == 1:
        return True
    if len(found) > 2 or found[0].doc_id != found[1].doc_id:
        return False
    a, b = position(found[0]), position(found[1])
    return a is not None and b is not None and abs(a - b) == 1


def _across(norm: str, p: Passages) -> tuple[str, ...] | None:
    """The answer in stitched adjacent chunks, where no single chunk holds it: the chunks holding it, most first."""
    needle = f" {norm} "
    n = len(norm.split())
    hits: list[tuple[str, ...]] = []
    for seg in p.stitched_segments:
        at = seg.norm.find(needle)
        while at >= 0:
            holders = seg.holders(seg.token_index(at), n)
            if holders[0][0] < n:  # inside one chunk it is the normalized level's match, not this one's
                hits.append(tuple(c.chunk_id for _, c in holders))
                if p.ranked:
                    return hits[0]
            at = seg.norm.find(needle, at + 1)
    # A scan takes the answer only if it crosses exactly one boundary in the whole index.
    return hits[0] if len(hits) == 1 else None


def _overlap(
    norm: str, p: Passages, long_answer_tokens: int, min_recall: float
) -> tuple[tuple[str, ...], float] | None:
    """The chunk, or pair of adjacent chunks, with the highest token recall of a long answer, if high enough."""
    tokens = norm.split()
    if len(tokens) < long_answer_tokens:
        return None
    need = Counter(tokens)
    bound = min_recall * len(tokens)
    # How many of the answer's tokens each chunk holds at least once: an upper bound on its multiset recall, from
    # the postings, so chunks sharing little with the answer are never read.
    present: Counter[int] = Counter()
    for t, n in need.items():
        for i in p.postings.get(t, ()):
            present[i] += n

    def recall(i: int) -> float:
        return token_recall(tokens, Counter(p.segments[i].norm.split())) if present[i] >= bound else 0.0

    single = {i: recall(i) for i in present}
    # (recall, order, chunk indices with the oracle first)
    scored = [(r, i, (i,)) for i, r in single.items() if r >= min_recall]
    for j, (a, b) in enumerate(p.pairs):
        if present[a] + present[b] < bound:  # bounds the pair's union from above too
            continue
        r = token_recall(tokens, Counter(Segment.of([p.chunks[a], p.chunks[b]]).norm.split()))
        # A pair counts only where it holds more of the answer than either chunk alone: it straddles the boundary.
        if r >= min_recall and r > max(single.get(a, 0.0), single.get(b, 0.0)):
            ra, rb = (token_recall(tokens, Counter(p.segments[i].norm.split())) for i in (a, b))
            first, second = (a, b) if ra >= rb else (b, a)  # the oracle: the chunk holding more of the answer
            scored.append((r, len(p.chunks) + j, (first, second)))
    if not scored:
        return None
    if not p.ranked and len({p.chunks[i].doc_id for s in scored for i in s[2]}) > 1:
        return None  # passages in two documents hold most of the answer: no telling which one it came from
    top = max(s[0] for s in scored)
    best = min((s for s in scored if s[0] == top), key=lambda s: s[1])
    return tuple(p.chunks[i].chunk_id for i in best[2]), top
