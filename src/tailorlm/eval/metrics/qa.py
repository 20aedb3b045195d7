"""Extractive-QA metrics: SQuAD exact match and token F1.

Reference: Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine Comprehension of Text", and the official
SQuAD v1.1 evaluation script (``evaluate-v1.1.py``), whose ``normalize_answer``, ``exact_match_score`` and
``f1_score`` these functions reproduce. A prediction is scored against every reference and the best score counts
(``metric_max_over_ground_truths`` in the script).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, and collapse whitespace.

    The order is the official script's (lower → remove punctuation → remove articles → fix whitespace); it matters:
    "The." loses its period before "the" is matched as a word.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_refs(refs: str | Sequence[str]) -> list[str]:
    # A bare string is one reference, not a sequence of one-character references.
    out = [refs] if isinstance(refs, str) else list(refs)
    if not out:
        raise ValueError("no reference answers to compare against")
    return out


def _max_over_refs(score: Callable[[str, str], float], pred: str, refs: str | Sequence[str]) -> float:
    return max(score(pred, ref) for ref in _as_refs(refs))


def _exact(pred: str, ref: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(ref))


def _f1(pred: str, ref: str) -> float:
    pred_tokens = normalize_answer(pred).split()
    ref_tokens = normalize_answer(ref).split()
    if not pred_tokens or not ref_tokens:
        # v1.1 scores two empty answers 0; we follow the SQuAD v2.0 script (1.0 iff both are empty) so that a
        # reference that normalizes to nothing (e.g. "the") still matches itself.
        return float(pred_tokens == ref_tokens)
    # Multiset intersection: a token counts as often as it occurs in both.
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0 (SQuAD v1.1)."""
    return _max_over_refs(_exact, pred, refs)


def token_f1(pred: str, refs: str | Sequence[str]) -> float:
    """Bag-of-tokens F1 between the normalized prediction and the best-matching reference (SQuAD v1.1)."""
    return _max_over_refs(_f1, pred, refs)


def _contains(pred: str, ref: str) -> float:
    ref_n = normalize_answer(ref)
    return float(bool(ref_n) and f" {ref_n} " in f" {normalize_answer(pred)} ")


def contains_answer(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 if a normalized reference appears, as whole words, inside the normalized prediction.

    The lenient match of generative open-domain QA ("has answer": Mallen et al. 2023, PopQA; Asai et al. 2024,
    Self-RAG): it credits a right answer inside a sentence, which token F1 and exact match punish for verbosity.
    Report it next to F1, not instead of it: a prediction that lists every candidate also contains the answer.
    """
    return _max_over_refs(_contains, pred, refs)
