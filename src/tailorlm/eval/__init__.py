"""Evaluation: metrics, statistics, task runners and reports.

Importing ``tailorlm.eval`` is cheap: the names below load their modules (numpy, sacrebleu, jsonschema) on first
use, so the CLI can start without paying for them.

- ``tailorlm.eval.metrics``: the metric registry (:func:`get_metric`, :func:`compute_metrics`) and the pure metric
  functions behind it.
- ``tailorlm.eval.stats``: bootstrap confidence intervals and paired significance tests.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name → module that defines it; resolved lazily by __getattr__ (PEP 562).
_LAZY = {
    "Metric": "tailorlm.eval.metrics",
    "METRIC_NAMES": "tailorlm.eval.metrics",
    "get_metric": "tailorlm.eval.metrics",
    "compute_metrics": "tailorlm.eval.metrics",
    "per_example_scores": "tailorlm.eval.metrics",
    "bootstrap_ci": "tailorlm.eval.stats",
    "paired_bootstrap": "tailorlm.eval.stats",
    "paired_permutation_test": "tailorlm.eval.stats",
    "bootstrap_metric": "tailorlm.eval.stats",
    "compare_metric": "tailorlm.eval.stats",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
