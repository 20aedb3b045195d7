"""Score predictions: per-example scores, bootstrap confidence intervals, and per-category breakdowns."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tailorlm.core.task import Task
from tailorlm.eval.examples import Example
from tailorlm.eval.metrics import get_metric
from tailorlm.eval.stats import bootstrap_ci


def score_examples(task: Task, examples: list[Example], predictions: list[str]) -> dict[str, Any]:
    """``{"metrics": {name: {value, low, high, higher_is_better}}, "per_example": [...], "by_category": {...}}``.

    Corpus metrics (BLEU, macro-F1) have no per-example score; their CI comes from resampling whole examples.
    """
    refs = [ex.reference for ex in examples]
    records = [ex.record for ex in examples]
    per_example: list[dict[str, float]] = [{} for _ in examples]
    metrics: dict[str, Any] = {}
    for name in task.metrics:
        metric = get_metric(name)
        conf = {"n_resamples": task.bootstrap.resamples, "confidence": task.bootstrap.confidence, "seed": task.seed}
        if metric.per_example is not None:
            scores = metric.scores(predictions, refs, records)
            for row, s in zip(per_example, scores, strict=True):
                row[name] = s
            ci = bootstrap_ci(scores, **conf)
        else:
            ci = bootstrap_ci((predictions, refs, metric.corpus), **conf)
        metrics[name] = {
            "value": ci["mean"],
            "low": ci["low"],
            "high": ci["high"],
            "higher_is_better": metric.higher_is_better,
        }
    return {"metrics": metrics, "per_example": per_example, "by_category": _by_category(examples, per_example)}


def _by_category(examples: list[Example], per_example: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for ex, scores in zip(examples, per_example, strict=True):
        if ex.category is not None:
            groups[ex.category].append(scores)
    out: dict[str, dict[str, float]] = {}
    for cat, rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        out[cat] = {"n": len(rows)}
        for name in rows[0]:
            out[cat][name] = sum(r[name] for r in rows) / len(rows)
    return out
