"""Bias and safety probes that any System can run (issue 18, point 7).

- ``fairness``: counterfactual fairness. Swap demographic terms (gendered words, first names, nationalities) in a
  Task's eval inputs and report how often the answer changes and the primary metric per group
  (:mod:`tailorlm.eval.probes.fairness`, swap lists in ``data/``, swap logic in :mod:`tailorlm.eval.probes.swaps`).
- ``harmlessness``: answer the packaged red-team prompts and report the refusal rate, optionally a reward model's
  or a judge's score (:mod:`tailorlm.eval.probes.harmlessness`, detector in :mod:`tailorlm.eval.probes.refusal`).

:func:`run_probes` runs both and :func:`probes_markdown` renders the result with what the checks cannot show
(:mod:`tailorlm.eval.probes.report`). ``tailor probe`` is the CLI. Importing this package is cheap: the names below
load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run_probes": "tailorlm.eval.probes.report",
    "probes_markdown": "tailorlm.eval.probes.report",
    "ProbesReport": "tailorlm.eval.probes.report",
    "probe_fairness": "tailorlm.eval.probes.fairness",
    "FairnessReport": "tailorlm.eval.probes.fairness",
    "probe_harmlessness": "tailorlm.eval.probes.harmlessness",
    "HarmlessnessReport": "tailorlm.eval.probes.harmlessness",
    "detect_refusal": "tailorlm.eval.probes.refusal",
    "is_refusal": "tailorlm.eval.probes.refusal",
    "load_axes": "tailorlm.eval.probes.swaps",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
