"""RAFT-style training data (Zhang et al., 2024, "RAFT: Adapting Language Model to Domain Specific RAG"): chat
records that pair each question with retrieved context, the gold passage mixed among distractors.

With probability ``p_oracle`` the gold ("oracle") passage is among the sources, at a random position, and the
answer cites it; otherwise only distractors are shown, so the model also learns answers are not always in the
context (RAFT keeps the reference answer there; ``no_oracle="abstain"`` teaches saying so instead). Distractors are
the retriever's own top non-relevant hits: hard negatives, as at inference. The user turn is built by the same
function as at inference (``rag.answer.build_input``), so training and serving prompts match exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from tailorlm.core.io import atomic_write_text
from tailorlm.core.system import RetrieverSpec
from tailorlm.rag.answer import build_input
from tailorlm.rag.evaluation import RetrievalQuery
from tailorlm.rag.retrieval import Retriever
from tailorlm.rag.types import Hit


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
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Records in OpenAI chat format, plus counts (written, with_oracle, skipped for lack of a gold passage).

    ``render(query)`` is the question as the System will show it (e.g. through the task's input template); the
    retrieval itself always uses the raw question, as the RAG System does at inference.
    """
    spec = spec or RetrieverSpec(index="unused")
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    counts = {"written": 0, "with_oracle": 0, "skipped_no_gold": 0, "skipped_no_answer": 0}
    for q in queries:
        if not q.answers:
            counts["skipped_no_answer"] += 1
            continue
        hits = retriever.retrieve(q.question, k=depth)
        gold = [h for h in hits if q.relevant(h.chunk)]
        negatives = [h for h in hits if not q.relevant(h.chunk)][:distractors]
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
                    "chunk_ids": [h.chunk.chunk_id for h in shown],
                    "source": "rag-raft",
                },
            }
        )
        counts["written"] += 1
    return records, counts


def write_jsonl(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Plain OpenAI chat records to ``path`` (what `tailor train sft` reads), and each record's provenance
    (question id, oracle or not, chunk ids) line by line to the sidecar ``PATH.meta.jsonl``."""
    path = Path(path)
    chats = "".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n" for r in records)
    meta = "".join(json.dumps(r.get("metadata", {}), ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path.with_suffix(".meta.jsonl"), meta)
    return atomic_write_text(path, chats)
