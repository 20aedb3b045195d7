"""Abstention threshold calibration. The signal is absolute: the best passage's sentence similarity (max-sim
cosine) to the question, which, unlike the fused z-score, means the same on every query and every index.

The threshold keeps a chosen share of the user's answerable questions answered (their own eval set); a fixed set
of everyday off-topic questions shows how many unrelated questions it would turn away.
"""

from __future__ import annotations

from collections.abc import Sequence

from tailorlm.rag.retrieval import Retriever

OFF_TOPIC = [
    "What is a good recipe for banana bread?",
    "How do I change a flat tyre on a bicycle?",
    "Who won the football world cup in 1998?",
    "What is the best way to learn to play the guitar?",
    "How many calories are in an apple?",
    "What time zone is Tokyo in?",
    "How do I reset my email password?",
    "What should I pack for a beach holiday?",
    "How long should I boil an egg?",
    "What is the plot of the film Titanic?",
    "How do you train a puppy to sit?",
    "What is the exchange rate between euros and dollars?",
    "Which houseplants need little light?",
    "How do I knit a scarf?",
    "What are the rules of chess castling?",
    "How do I make cold brew coffee?",
    "What is the tallest mountain in Africa?",
    "How do I remove a red wine stain from a carpet?",
    "What is a healthy breakfast for kids?",
    "How do I write a cover letter for a job?",
]


def best_scores(retriever: Retriever, questions: Sequence[str]) -> list[float]:
    """The top hit's dense (max-sim) similarity per question; -1 when nothing is retrieved."""
    out = []
    for q in questions:
        hits = retriever.retrieve(q, k=1, mode="hybrid")
        out.append(max((h.scores.get("dense", -1.0) for h in hits), default=-1.0))
    return out
