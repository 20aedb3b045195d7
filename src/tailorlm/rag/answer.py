"""Answering with retrieved sources: context within a token budget, clearly delimited, cited as [n], and an
abstention when the evidence is too weak.

Retrieved text is data. It goes only into the user turn, inside ``<source>`` tags it cannot close (tag-like text in
a passage is defused), after instructions that say so; it never reaches the system message, and nothing parses it
for tool calls. A passage saying "ignore previous instructions" is therefore just a passage (tests/…/test_rag_answer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tailorlm.core.system import RetrieverSpec, System
from tailorlm.rag.types import Hit

_TAG = re.compile(r"<\s*(/?)\s*source", re.IGNORECASE)
_CITE = re.compile(r"\[(\d{1,3})\]")
_CHARS_PER_TOKEN = 4  # estimate when no tokenizer is at hand (remote engines)
_DEFAULT_WINDOW = 4096  # assumed window when the model's is unknown


@dataclass
class Citation:
    """A source the answer cites: where it is, the exact span, and how strongly it was retrieved."""

    n: int
    chunk_id: str
    doc_id: str
    source: str
    title: str
    start: int
    end: int
    score: float
    text: str

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("n", "chunk_id", "doc_id", "source", "title", "start", "end", "score")}


@dataclass
class RagContext:
    """What retrieval gave one question: the sources shown (numbered from 1) and the model input built from them."""

    question: str
    hits: list[Hit]
    shown: list[Hit] = field(default_factory=list)
    input: str = ""
    abstain: bool = False

    def citations(self, answer: str) -> list[Citation]:
        """The sources an answer cites as [n], in order of first mention; numbers without a source are ignored."""
        seen: list[int] = []
        for m in _CITE.finditer(answer):
            n = int(m.group(1))
            if 1 <= n <= len(self.shown) and n not in seen:
                seen.append(n)
        out = []
        for n in seen:
            h = self.shown[n - 1]
            c = h.chunk
            out.append(Citation(n, c.chunk_id, c.doc_id, c.source, c.title, c.start, c.end, h.score, c.text))
        return out

    def sources_json(self) -> list[dict[str, Any]]:
        return [{"n": i, **h.as_json()} for i, h in enumerate(self.shown, 1)]


def strip_citations(text: str) -> str:
    """The answer without its [n] markers, for scoring against plain references."""
    return re.sub(r"\s*\[\d{1,3}\]", "", text).strip()


def defuse(text: str) -> str:
    """Make tag-like text inside a passage harmless, so it cannot close its <source> block or open another."""
    return _TAG.sub(lambda m: f"‹{m.group(1)}source", text)


def format_source(n: int, hit: Hit) -> str:
    c = hit.chunk
    # Title and section come from the document too (a Markdown heading, a JSONL title field): as untrusted as
    # its text, so they are defused and kept on one line inside their quotes.
    title, heading = (" ".join(defuse(s).replace('"', "'").split()) for s in (c.title, c.heading))
    where = f' section="{heading}"' if heading else ""
    return f'<source id="{n}" title="{title}"{where}>\n{defuse(c.text).strip()}\n</source>'


def build_input(spec: RetrieverSpec, question: str, shown: Sequence[Hit]) -> str:
    sources = "\n\n".join(format_source(i, h) for i, h in enumerate(shown, 1))
    return f"{spec.instructions}\n\n{sources}\n\nQuestion: {question}"


def fit_sources(
    spec: RetrieverSpec, question: str, hits: Sequence[Hit], count_tokens: Callable[[str], int], budget: int
) -> list[Hit]:
    """The best-ranked passages whose whole input fits ``budget`` tokens; lower-ranked ones are dropped, not cut."""
    shown: list[Hit] = []
    used = count_tokens(build_input(spec, question, []))
    for h in hits:
        cost = count_tokens(format_source(len(shown) + 1, h)) + 2
        if used + cost > budget:
            continue  # a shorter passage further down may still fit
        shown.append(h)
        used += cost
    return shown


@lru_cache(maxsize=4)
def _open_index(location: str) -> Any:
    from tailorlm.rag.index import Index

    return Index.open(location)


class RagAnswerer:
    """Turns questions into RagContexts for a System with a retriever."""

    def __init__(
        self, system: System, *, tokenizer: Any = None, answer_tokens: int | None = None, engine: Any = None
    ) -> None:
        if system.retriever is None:
            raise ValueError("the System has no retriever")
        self.spec = system.retriever
        self.index = _open_index(self.spec.index)
        reranker = None
        if self.spec.reranker == "llm":
            from tailorlm.rag.rerank import LLMReranker

            reranker = LLMReranker(engine) if engine is not None else None
        # Only what the System sets overrides the index's own retrieval settings (the defaults, or tuned ones).
        overrides = {"mode": self.spec.mode, "mmr_lambda": self.spec.mmr_lambda}
        self.retriever = self.index.retriever(
            top_k=self.spec.top_k,
            reranker=None if self.spec.reranker == "llm" else self.spec.reranker,
            **{key: v for key, v in overrides.items() if v is not None},
        )
        if reranker is not None:
            self.retriever.reranker = reranker
        self.tokenizer = tokenizer
        answer_tokens = answer_tokens if answer_tokens is not None else system.generation.max_new_tokens
        self.budget = self.spec.max_context_tokens or max(256, self._window() - answer_tokens - 64)

    def _window(self) -> int:
        n = getattr(self.tokenizer, "model_max_length", None)
        return int(n) if isinstance(n, int) and 0 < n < 1_000_000 else _DEFAULT_WINDOW

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, len(text) // _CHARS_PER_TOKEN)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prepare(self, questions: Sequence[str], queries: Sequence[str] | None = None) -> list[RagContext]:
        """Sources for each question. ``queries`` (default: the questions) are what is searched: the raw
        question, when the task's input template wraps it in instructions that would only add noise."""
        out = []
        for i, q in enumerate(questions):
            query = queries[i] if queries is not None else q
            hits = self.retriever.retrieve(query, where=self.spec.where or None)
            ctx = RagContext(question=q, hits=hits)
            best = max((h.scores.get("dense", float("inf")) for h in hits), default=float("-inf"))
            if not hits or (self.spec.min_score is not None and best < self.spec.min_score):
                ctx.abstain = True
                out.append(ctx)
                continue
            ctx.shown = fit_sources(self.spec, q, hits, self.count_tokens, self.budget)
            ctx.input = build_input(self.spec, q, ctx.shown)
            out.append(ctx)
        return out
