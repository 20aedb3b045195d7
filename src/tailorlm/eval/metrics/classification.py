"""Classification metrics over string labels: accuracy, per-class P/R/F1, macro-/micro-F1 and the confusion matrix.

Definitions follow scikit-learn's ``precision_recall_fscore_support`` (Pedregosa et al. 2011) with
``zero_division=0``, and Sokolova & Lapalme 2009, "A systematic analysis of performance measures for
classification tasks" for the macro/micro averages. Everything returns plain dicts, lists and floats so a report
can ``json.dumps`` it.

Generated text is mapped to a label with :func:`normalize_label` first. A prediction that maps to no label is
``None``: it is wrong for its example (a false negative of the true class) and a false positive of no class, so
``micro_f1`` can differ from ``accuracy`` exactly when the model abstains.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

# Stripped around a whole answer before the exact comparison, so "Positive." and "'positive'" match "positive".
_STRIP = string.whitespace + string.punctuation


def normalize_label(pred: str, labels: Sequence[str]) -> str | None:
    """Map a generated answer to one of ``labels``, or ``None`` when none fits.

    1. exact match, case-insensitive, after stripping surrounding whitespace and punctuation;
    2. otherwise the label whose first whole-word occurrence comes earliest in the text (a longer label wins a tie,
       so "very negative" beats "negative" in "very negative, I think");
    3. otherwise ``None``.
    """
    answer = pred.strip(_STRIP).casefold()
    for label in labels:
        if answer == label.strip(_STRIP).casefold():
            return label
    best: tuple[int, int, str] | None = None  # (position, -length, label): min() picks earliest, then longest
    for label in labels:
        if not label.strip():
            continue
        # (?<!\w)/(?!\w) rather than \b: \b fails next to a label that starts or ends with punctuation.
        m = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", pred, flags=re.IGNORECASE)
        if m and (best is None or (m.start(), -len(label)) < best[:2]):
            best = (m.start(), -len(label), label)
    return best[2] if best else None


def _check(preds: Sequence[str | None], refs: Sequence[str]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not refs:
        raise ValueError("no examples to score")


def _labels(refs: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        # The gold label set. Predictions outside it (None, or text that is no label) only ever count as errors.
        return sorted(set(refs))
    unknown = sorted(set(refs) - set(labels))
    if unknown:
        raise ValueError(f"references {unknown} are not among the labels {list(labels)}")
    return list(labels)


def accuracy(preds: Sequence[str | None], refs: Sequence[str]) -> float:
    """Fraction of examples whose prediction equals the reference label."""
    _check(preds, refs)
    return sum(p == r for p, r in zip(preds, refs, strict=True)) / len(refs)


def confusion_matrix(
    preds: Sequence[str | None], refs: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Counts with rows = true label and columns = predicted label, in ``labels`` order.

    Returns ``{"labels": [...], "matrix": [[int]], "other": [int]}``; ``other[i]`` counts examples of true label
    ``labels[i]`` whose prediction is no label (``None`` or out of set), so each row plus its ``other`` sums to the
    class support.
    """
    _check(preds, refs)
    names = _labels(refs, labels)
    index = {label: i for i, label in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    other = [0] * len(names)
    for p, r in zip(preds, refs, strict=True):
        if p in index:
            matrix[index[r]][index[p]] += 1
        else:
            other[index[r]] += 1
    return {"labels": names, "matrix": matrix, "other": other}


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    # zero_division=0 as in scikit-learn: a class never predicted has precision 0, never seen has recall 0.
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def per_class(
    preds: Sequence[str | None], refs: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """``{label: {"precision", "recall", "f1", "support"}}`` for every label."""
    cm = confusion_matrix(preds, refs, labels)
    m: list[list[int]] = cm["matrix"]
    out: dict[str, dict[str, float]] = {}
    for i, label in enumerate(cm["labels"]):
        tp = m[i][i]
        fp = sum(row[i] for row in m) - tp  # predicted as this label, truly another
        support = sum(m[i]) + cm["other"][i]
        precision, recall, f1 = _prf(tp, fp, support - tp)
        out[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def macro_f1(preds: Sequence[str | None], refs: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of the per-class F1 scores: every class counts the same, however rare."""
    scores = per_class(preds, refs, labels)
    return sum(s["f1"] for s in scores.values()) / len(scores)


def micro_f1(preds: Sequence[str | None], refs: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """F1 of the pooled TP/FP/FN counts over all classes. Equals accuracy unless some predictions are no label."""
    cm = confusion_matrix(preds, refs, labels)
    m: list[list[int]] = cm["matrix"]
    tp = sum(m[i][i] for i in range(len(m)))
    predicted = sum(map(sum, m))  # predictions that are some label: TP + FP
    return _prf(tp, predicted - tp, len(refs) - tp)[2]


def classification_report(
    preds: Sequence[str | None], refs: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Everything above in one JSON-ready dict."""
    return {
        "accuracy": accuracy(preds, refs),
        "macro_f1": macro_f1(preds, refs, labels),
        "micro_f1": micro_f1(preds, refs, labels),
        "per_class": per_class(preds, refs, labels),
        "confusion": confusion_matrix(preds, refs, labels),
    }
