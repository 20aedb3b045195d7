"""RAFT-style training data (Zhang et al., 2024, "RAFT: Adapting Language Model to Domain Specific RAG"): chat
records that pair each question with retrieved context, the gold passage mixed among distractors.

With probability ``p_oracle`` the gold ("oracle") passage is among the sources, at a random position, and the
answer cites it; otherwise only distractors are shown, so the model also learns answers are not always in the
context (RAFT keeps the reference answer there; ``no_oracle="abstain"`` teaches saying so instead). Distractors are
the retriever's own top non-relevant hits: hard negatives, as at inference. The user turn is built by the same
function as at inference (``rag.answer.build_input``), so training and serving prompts match exactly.

The gold passage comes from the record's ``gold`` spans or ``doc_ids`` when it has them. A record with only a
question and reference answers gets the chunk that contains an answer (``rag.gold``): searched among the retrieved
candidates and their neighbouring chunks first (cheap, and retrieval rank settles a short answer found in several
places), then, for the rest, in a scan of the whole index that accepts only an unambiguous match. Records with no
match are skipped and counted; when almost none match, the answers do not come from these documents and the
whole run is refused (``MIN_GOLD_SHARE``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tailorlm.core.io import atomic_write_text
from tailorlm.core.system import RetrieverSpec
from tailorlm.errors import DataError
from tailorlm.rag.answer import build_input
from tailorlm.rag.evaluation import RetrievalQuery
from tailorlm.rag.gold import LEVELS, STRICT, GoldMatch, Passages, find_gold, position
from tailorlm.rag.retrieval import Retriever
from tailorlm.rag.stores.base import Store
from tailorlm.rag.types import Hit, StoredChunk

# Refuse when fewer than this share of the records without gold ids find a gold passage by their answer. Data
# whose answers come from the indexed documents matches far above it (reference answers are usually quoted or
# lightly edited spans); 5% means the answers were written from elsewhere (another corpus, free-form or yes/no
# answers, the wrong field mapped as the answer), and a RAFT set built from the few accidental matches would
# teach citing passages that merely mention a word of the answer.
MIN_GOLD_SHARE = 0.05
# The index scan (for answers retrieval missed) holds every chunk's text, normalized text and token offsets in
# memory, twice (per chunk and stitched per document), plus a token index: ~7 KB for a default 200-token chunk,
# so up to ~140 MB. Measured on 98 synthetic 9,000-word papers (5.9k chunks): 5 s to prepare, once, then ~50 ms
# per answer the retrieved candidates miss. Larger indexes rely on the retrieved candidates and their neighbours.
SCAN_MAX_CHUNKS = 20_000
# The chunks before and after each retrieved candidate are searched too: an answer may straddle the boundary.
NEIGHBOURS = 1


class GoldFinder:
    """The gold passage of a record that has answers but no gold ids: among the retrieved hits and their
    neighbouring chunks, then (once per process, lazily) in a scan of the whole index."""

    def __init__(self, store: Store, *, scan: bool = True) -> None:
        self.store = store
        self.scan = scan
        self._scanned: tuple[Passages, dict[str, StoredChunk]] | None = None

    def find(self, answers: list[str], hits: list[Hit]) -> tuple[GoldMatch, dict[str, StoredChunk], bool] | None:
        """(match, the chunks it names by id, whether the scan found it), or None."""
        pool = [h.chunk for h in hits]
        wanted = [
            f"{c.doc_id}#{p + d}"
            for c in pool
            if (p := position(c)) is not None
            for d in range(-NEIGHBOURS, NEIGHBOURS + 1)
            if d and p + d >= 0
        ]
        have = {c.chunk_id for c in pool}
        # Neighbours rank right after the hits: a direct hit wins a tie, as the retriever ranked it.
        pool += self.store.read_chunks([i for i in dict.fromkeys(wanted) if i not in have])
        by_id = {c.chunk_id: c for c in pool}
        ranked = Passages.of(pool)
        # Strict levels everywhere before the overlap level anywhere: a verbatim answer found by the scan is
        # better evidence than a paraphrase among the candidates.
        match = find_gold(answers, ranked, levels=STRICT)
        if match is None and self.scan and (scanned := self._scan()) is not None:
            passages, all_chunks = scanned
            match = find_gold(answers, passages, levels=STRICT)
            if match is not None:
                return match, all_chunks, True
        if match is None:
            match = find_gold(answers, ranked, levels=("overlap",))
        if match is None and self.scan and (scanned := self._scan()) is not None:
            match = find_gold(answers, scanned[0], levels=("overlap",))
            if match is not None:
                return match, scanned[1], True
        return (match, by_id, False) if match is not None else None

    def _scan(self) -> tuple[Passages, dict[str, StoredChunk]] | None:
        if self._scanned is None:
            if self.store.count_chunks() > SCAN_MAX_CHUNKS:
                self.scan = False
                return None
            # Only the text is needed (a gold passage is shown, never scored): drop the vectors as they arrive.
            none, no_sentences = np.zeros(0, dtype=np.float32), np.zeros((0, self.store.dim), dtype=np.int8)
            chunks = [replace(c, vector=none, sentences=no_sentences) for c in self.store.read_chunks()]
            self._scanned = Passages.of(chunks, ranked=False), {c.chunk_id: c for c in chunks}
        return self._scanned


def make_sft_records(
    retriever: Retriever,
    queries: Sequence[RetrievalQuery],
    *,
    spec: RetrieverSpec | None = None,
    distractors: int = 3,
    p_oracle: float = 0.8,
    no_oracle: Literal["reference", "abstain"] = "reference",
    seed: int = 0,
    depth: int = 20,
    render: Callable[[RetrievalQuery], str] | None = None,
    scan: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Records in OpenAI chat format, plus counts (see :func:`gold_summary`):

    - ``written``, ``with_oracle``; ``skipped_no_answer`` (no reference answer), ``skipped_no_gold`` (no gold
      passage: given ids not retrieved, or ``unmatched``);
    - ``gold_given``: records with ``gold``/``doc_ids`` (their gold passage must be among the retrieved);
    - for the others, found by their answer: ``matched_exact``, ``matched_normalized``, ``matched_neighbours``
      (across a chunk boundary), ``matched_overlap`` (a long answer's token recall), ``unmatched``; and
      ``matched_by_scan``, how many of the matches only the index scan found (not retrieved, nor a neighbour).

    ``render(query)`` is the question as the System will show it (e.g. through the task's input template); the
    retrieval itself always uses the raw question, as the RAG System does at inference. ``scan=False`` searches
    only the retrieved chunks and their neighbours. Raises ``DataError`` when fewer than ``MIN_GOLD_SHARE`` of the
    records without gold ids find a gold passage.
    """
    spec = spec or RetrieverSpec(index="unused")
    rng = random.Random(seed)
    finder = GoldFinder(retriever.store, scan=scan)
    records: list[dict[str, Any]] = []
    counts = {"written": 0, "with_oracle": 0, "skipped_no_gold": 0, "skipped_no_answer": 0, "gold_given": 0}
    counts |= {f"matched_{level}": 0 for level in LEVELS} | {"matched_by_scan": 0, "unmatched": 0}
    for q in queries:
        if not q.answers:
            counts["skipped_no_answer"] += 1
            continue
        # Chunks, not windows: the gold finder reasons about single chunks and stitches their neighbours itself.
        hits = retriever.retrieve(q.question, k=depth, neighbours=0)
        if q.gold or q.doc_ids:
            counts["gold_given"] += 1
            gold = [h for h in hits if q.relevant(h.chunk)]
            negatives = [h for h in hits if not q.relevant(h.chunk)][:distractors]
            how = "ids"
        else:
            found = finder.find(q.answers, hits)
            if found is None:
                counts["unmatched"] += 1
                counts["skipped_no_gold"] += 1
                continue
            match, chunks, scanned = found
            counts[f"matched_{match.level}"] += 1
            counts["matched_by_scan"] += scanned
            oracle = next((h for h in hits if h.chunk.chunk_id == match.chunk_ids[0]), None)
            gold = [oracle or Hit(chunks[match.chunk_ids[0]], 0.0)]
            # Not distractors: the chunks holding part of the answer, and any other that contains it whole.
            negatives = [h for h in hits if h.chunk.chunk_id not in match.chunk_ids and not q.relevant(h.chunk)][
                :distractors
            ]
            how = match.level
        if not gold:
            counts["skipped_no_gold"] += 1
            continue
        with_oracle = rng.random() < p_oracle
        shown: list[Hit] = list(negatives)
        if with_oracle:
            shown.insert(rng.randrange(len(shown) + 1), gold[0])
        answer = q.answers[0]
        if with_oracle:
            answer = f"{answer} [{shown.index(gold[0]) + 1}]"
            counts["with_oracle"] += 1
        elif no_oracle == "abstain":
            answer = spec.abstain_message
        records.append(
            {
                "messages": [
                    {"role": "user", "content": build_input(spec, render(q) if render else q.question, shown)},
                    {"role": "assistant", "content": answer},
                ],
                "metadata": {
                    "id": q.id,
                    "oracle": with_oracle,
                    "gold": how,  # ids, or the level that matched the answer (rag.gold)
                    "gold_chunk_id": gold[0].chunk.chunk_id,
                    "chunk_ids": [h.chunk.chunk_id for h in shown],
                    "source": "rag-raft",
                },
            }
        )
        counts["written"] += 1
    check_gold_share(counts)
    return records, counts


def check_gold_share(counts: dict[str, int]) -> None:
    """Refuse when almost none of the records without gold ids found a gold passage by their answer."""
    tried = sum(counts[f"matched_{level}"] for level in LEVELS) + counts["unmatched"]
    if tried and (tried - counts["unmatched"]) < MIN_GOLD_SHARE * tried:
        raise DataError(
            f"only {tried - counts['unmatched']} of {tried} training answers were found in the indexed documents, "
            "so there is no gold passage to train on",
            hint="RAFT needs answers quoted (or lightly edited) from the documents; otherwise give each record "
            "'doc_ids' (the gold document ids, e.g. file paths as ingested) or 'gold' spans",
        )


def gold_summary(counts: dict[str, int]) -> str:
    """One line on how the gold passages were found, e.g. for the ladder's note and the CLI."""
    matched = {level: counts.get(f"matched_{level}", 0) for level in LEVELS}
    parts = []
    if counts.get("gold_given"):
        parts.append(f"{counts['gold_given']} by gold ids")
    if found := sum(matched.values()):
        by = ", ".join(f"{n} {level}" for level, n in matched.items() if n)
        scan = f"; {counts['matched_by_scan']} only by scanning the index" if counts.get("matched_by_scan") else ""
        parts.append(f"{found} by their answer ({by}{scan})")
    if counts.get("unmatched"):
        parts.append(f"{counts['unmatched']} answers not found in the documents (skipped)")
    return "gold passages: " + ("; ".join(parts) if parts else "none")


def write_jsonl(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Plain OpenAI chat records to ``path`` (what `tailor train sft` reads; a record's ``tools`` stay with it),
    and each record's provenance (question id, oracle or not, chunk ids) line by line to ``PATH.meta.jsonl``."""
    path = Path(path)
    kept = [{"messages": r["messages"], **({"tools": r["tools"]} if r.get("tools") else {})} for r in records]
    chats = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    meta = "".join(json.dumps(r.get("metadata", {}), ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path.with_suffix(".meta.jsonl"), meta)
    return atomic_write_text(path, chats)
