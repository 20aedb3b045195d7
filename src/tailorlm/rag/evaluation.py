"""Retrieval metrics (recall@k, MRR, nDCG@k against gold passages or answer spans) and answer-side RAG metrics
(citation precision, abstention), each with a bootstrap CI like every other metric in tailorlm.

Relevance of a retrieved chunk to a question ("strict": one returned chunk holds the whole answer), in order of
precision:
1. ``gold`` spans ``{"doc_id", "start", "end"}``: the chunk's span contains the answer's span in that document;
2. ``doc_ids``: the chunk comes from a gold document (the user named documents, not spans);
3. ``answers`` only: the chunk's text contains an answer string (normalized as in SQuAD).

An answer longer than a chunk, or one cut by a chunk boundary, is found by no single chunk. The "adjacent" measure
(``recall_adjacent@k``) also credits it when returned chunks of one document that touch or overlap hold it together.

RAFT training data (``sft_data.py``) goes further for records with answers only: ``rag.gold`` finds the chunk
holding the answer also across chunk boundaries and, for long answers, by token overlap.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailorlm.errors import DataError
from tailorlm.eval.metrics.qa import normalize_answer
from tailorlm.eval.stats import bootstrap_ci
from tailorlm.rag.retrieval import Retriever
from tailorlm.rag.types import StoredChunk


@dataclass
class RetrievalQuery:
    id: str
    question: str
    answers: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    gold: list[dict[str, Any]] = field(default_factory=list)

    def relevant(self, chunk: StoredChunk) -> bool:
        return self._holds(chunk.doc_id, chunk.start, chunk.end, chunk.text)

    def relevant_adjacent(self, chunks: Sequence[StoredChunk]) -> bool:
        """Whether these returned chunks hold the answer, one alone or several adjacent ones of a document joined."""
        return any(self._holds(doc_id, a, b, text) for doc_id, a, b, text in join_adjacent(chunks))

    def _holds(self, doc_id: str, start: int, end: int, text: str) -> bool:
        if self.gold:
            return any(g["doc_id"] == doc_id and start <= int(g["start"]) and int(g["end"]) <= end for g in self.gold)
        if self.doc_ids:
            return doc_id in self.doc_ids
        norm = f" {normalize_answer(text)} "
        return any(f" {normalize_answer(a)} " in norm for a in self.answers if normalize_answer(a))


# Adjacent chunks abut across the whitespace between them: a paragraph break, or a few blank lines.
_MAX_JOIN_GAP = 8


def join_adjacent(chunks: Sequence[StoredChunk]) -> list[tuple[str, int, int, str]]:
    """(doc_id, start, end, text) of each run of chunks of one document that overlap or touch; texts are joined
    by their offsets (overlaps kept once, a gap filled with a space)."""
    runs: list[tuple[str, int, int, str]] = []
    by_doc: dict[str, list[StoredChunk]] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    for doc_id, group in by_doc.items():
        group = sorted(group, key=lambda c: (c.start, c.end))
        start, end, text = group[0].start, group[0].end, group[0].text
        for c in group[1:]:
            if c.start > end + _MAX_JOIN_GAP:
                runs.append((doc_id, start, end, text))
                start, end, text = c.start, c.end, c.text
            elif c.end > end:
                text += " " + c.text if c.start >= end else c.text[end - c.start :]
                end = c.end
        runs.append((doc_id, start, end, text))
    return runs


def load_queries(path: str | Path) -> list[RetrievalQuery]:
    """JSONL: ``question`` (or ``input``), and at least one of ``gold``, ``doc_ids``, or reference answers
    (``answers``, ``answer`` or ``reference``: a string or a list of strings).

    A record with answers only loads with ``gold`` and ``doc_ids`` empty: its relevant chunks are the ones holding
    an answer (and RAFT data finds its gold passage by the answer, ``rag.gold``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"questions file not found: {path}")
    out: list[RetrievalQuery] = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{line_no}: invalid JSON: {err.msg}") from err
        question = row.get("question", row.get("input"))
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{path}:{line_no}: question: missing or empty (expected a 'question' string)")
        answers = next((row[k] for k in ("answers", "answer", "reference") if row.get(k) is not None), [])
        answers = [answers] if isinstance(answers, str) else list(answers or [])
        if not all(isinstance(a, str) for a in answers):
            raise DataError(f"{path}:{line_no}: answers: expected a string or a list of strings, got {answers!r}")
        answers = [a for a in answers if a.strip()]
        q = RetrievalQuery(
            str(row.get("id", line_no)), question, answers, list(row.get("doc_ids", [])), list(row.get("gold", []))
        )
        if not (q.answers or q.doc_ids or q.gold):
            raise DataError(
                f"{path}:{line_no}: gold: none of 'gold', 'doc_ids' or reference answers "
                "('answers', 'answer' or 'reference') is given"
            )
        out.append(q)
    if not out:
        raise DataError(f"{path}: no questions")
    return out


def _ndcg(rels: Sequence[bool], k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(rels[:k]) if r)
    n_rel = min(sum(rels), k)  # relevant chunks we know of: those retrieved within the deepest cut
    ideal = sum(1.0 / math.log2(i + 2) for i in range(n_rel))
    return dcg / ideal if ideal else 0.0


def evaluate_retrieval(
    retriever: Retriever,
    queries: Sequence[RetrievalQuery],
    ks: Sequence[int] = (1, 3, 5, 10),
    *,
    where: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Recall@k (a relevant chunk within the top k), MRR@max(k) and nDCG@k, with 95% bootstrap CIs."""
    depth = max(ks)
    per_query: list[dict[str, Any]] = []
    latencies: list[float] = []
    iterator: Any = queries
    if progress:
        from rich.progress import track

        iterator = track(queries, description="retrieval eval", transient=True)
    for q in iterator:
        t0 = time.perf_counter()
        hits = retriever.retrieve(q.question, k=depth, where=where)
        latencies.append(time.perf_counter() - t0)
        rels = [q.relevant(h.chunk) for h in hits]
        first = next((i + 1 for i, r in enumerate(rels) if r), None)
        per_query.append(
            {
                "id": q.id,
                "first_relevant_rank": first,
                **{f"recall@{k}": float(first is not None and first <= k) for k in ks},
                **{
                    f"recall_adjacent@{k}": float(
                        (first is not None and first <= k) or q.relevant_adjacent([h.chunk for h in hits[:k]])
                    )
                    for k in ks
                },
                "context_chars@5": sum(len(h.chunk.text) for h in hits[:5]),
                "mrr": 1.0 / first if first else 0.0,
                **{f"ndcg@{k}": _ndcg(rels, k) for k in ks},
            }
        )
    metrics = {}
    names = [*(f"recall@{k}" for k in ks), *(f"recall_adjacent@{k}" for k in ks), "mrr", *(f"ndcg@{k}" for k in ks)]
    for name in names:
        ci = bootstrap_ci([p[name] for p in per_query])
        metrics[name] = {"value": ci["mean"], "low": ci["low"], "high": ci["high"]}
    lat = np.array(latencies) * 1000
    return {
        "n": len(queries),
        "metrics": metrics,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))},
        # What the answer step reads: the characters of the top 5 chunks (windows, with neighbour expansion).
        "context_chars@5": float(np.mean([p["context_chars@5"] for p in per_query])),
        "per_query": per_query,
    }


def citation_metrics(predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """From eval predictions with ``sources``/``citations``: citation precision (the cited passage contains a
    reference answer), the share of answers that cite anything, answer-in-context recall, and abstention rate."""
    precision, cites, context_recall, abstained = [], [], [], []
    for p in predictions:
        refs = p.get("reference")
        refs = [refs] if isinstance(refs, str) else list(refs or [])
        norm_refs = [f" {normalize_answer(r)} " for r in refs if normalize_answer(r)]
        sources = {s["n"]: f" {normalize_answer(s['text'])} " for s in p.get("sources") or []}
        abstained.append(float(bool(p.get("abstained"))))
        if norm_refs:
            context_recall.append(float(any(r in t for t in sources.values() for r in norm_refs)))
        cited = [c["n"] for c in p.get("citations") or []]
        cites.append(float(bool(cited)))
        if cited and norm_refs:
            precision.extend(float(any(r in sources.get(n, "") for r in norm_refs)) for n in cited)

    def ci(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"value": None, "low": None, "high": None, "n": 0}
        b = bootstrap_ci(values)
        return {"value": b["mean"], "low": b["low"], "high": b["high"], "n": len(values)}

    return {
        "citation_precision": ci(precision),
        "answers_with_citations": ci(cites),
        "answer_in_context": ci(context_recall),
        "abstention_rate": ci(abstained),
    }
