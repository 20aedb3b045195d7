"""How far to trust a judge: its agreement with labelled preferences (AlpacaEval's GPT-4 annotations).

AlpacaEval (Li et al. 2023, tatsu-lab/alpaca_eval) publishes the GPT-4 judge's preferences between
text-davinci-003 (``output_1``) and GPT-4 (``output_2``) on its 805 instructions: ``preference`` is 1 or 2
(which output won), 1.5 for a tie, 0 where both outputs are identical; some annotation files hold one value per
annotator instead. Before a user trusts a cheap judge on their own eval set, they can measure it here against a
strong one, next to trivial judges (the longer answer wins; the first answer wins) that any judge must beat.

Two choices keep the numbers honest:

- In the file GPT-4 is always ``output_2`` and wins 96% of the time. We put each sampled pair's outputs into the
  A/B slots by a seeded coin flip, so "always prefer A" scores about 50% and position bias is measurable.
- A judge is asked in both orders (MT-Bench, Zheng et al. 2023). ``agreement`` counts an inconsistent or invalid
  item as wrong; ``agreement_consistent`` is measured on the consistent items only, which flatters a judge that
  is rarely consistent, so the two are reported together with ``consistency``.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tailorlm.errors import DataError
from tailorlm.eval.judge import JudgeMode, OrderVerdict, PairwiseVerdict, Winner, judge_pairwise, summarize_pairwise
from tailorlm.models.engines.base import Engine, GenerationParams

Label = Literal["a", "b", "tie"]

ANNOTATIONS_FILE = "alpaca_eval/gpt4_vs_davinci003_annotations.json"  # relative to the shared data folder


@dataclass(frozen=True)
class LabelledPair:
    """One annotated comparison as published: which of ``output_1`` / ``output_2`` the annotator preferred."""

    instruction: str
    output_1: str
    output_2: str
    preference: Literal[1, 2] | float  # 1, 2, or 1.5 for a tie


def _preference(value: Any) -> float | None:
    """AlpacaEval's preference as 1, 2 or 1.5 (tie); None when there is none (0, null, NaN, identical outputs).

    Per-annotator lists are averaged, then rounded to the side the mean leans to (AlpacaEval's own reading).
    """
    values = value if isinstance(value, list) else [value]
    valid = [float(v) for v in values if isinstance(v, int | float) and not math.isnan(float(v)) and 1 <= v <= 2]
    if not valid:
        return None
    mean = sum(valid) / len(valid)
    return 1.0 if mean < 1.5 else 2.0 if mean > 1.5 else 1.5


def load_alpaca_eval_annotations(path: str | os.PathLike[str]) -> list[LabelledPair]:
    """Read an AlpacaEval annotations JSON file; items without a usable preference are left out."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"AlpacaEval annotations not found: {path}") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of annotations, got {type(records).__name__}")
    pairs = []
    for i, rec in enumerate(records):
        missing = [k for k in ("instruction", "output_1", "output_2", "preference") if k not in rec]
        if missing:
            raise DataError(f"{path}: annotation {i} has no field {', '.join(map(repr, missing))}")
        pref = _preference(rec["preference"])
        if pref is None or rec["output_1"] == rec["output_2"]:
            continue  # nothing to judge: no preference was recorded, or both outputs are the same text
        pairs.append(LabelledPair(rec["instruction"], rec["output_1"], rec["output_2"], pref))
    return pairs


def sample_pairs(pairs: Sequence[LabelledPair], n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """A fixed seeded sample of ``n`` pairs as judge items, each with its ``label`` ("a", "b" or "tie").

    Which output takes slot A is a seeded coin flip per pair (see the module docstring).
    """
    rng = random.Random(seed)
    chosen = rng.sample(list(pairs), min(n, len(pairs)))
    items = []
    for pair in chosen:
        swap = rng.random() < 0.5  # output_2 goes into slot A
        label: Label = "tie" if pair.preference == 1.5 else ("a" if (pair.preference == 1) != swap else "b")
        a, b = (pair.output_2, pair.output_1) if swap else (pair.output_1, pair.output_2)
        items.append({"instruction": pair.instruction, "output_a": a, "output_b": b, "label": label})
    return items


# --- trivial judges a user might otherwise use ------------------------------------------------------------


def length_winners(items: Sequence[Mapping[str, Any]]) -> list[Winner]:
    """ "The longer answer is better" (in characters; equal lengths tie). Strong on AlpacaEval, whose judges
    favour long answers (the reason for AlpacaEval 2's length-controlled win rate)."""
    return [
        "a"
        if len(it["output_a"]) > len(it["output_b"])
        else "b"
        if len(it["output_b"]) > len(it["output_a"])
        else "tie"
        for it in items
    ]


def first_position_winners(items: Sequence[Mapping[str, Any]]) -> list[Winner]:
    """ "Always prefer A", asked once: the judge that position bias turns a weak LLM judge into."""
    return ["a" for _ in items]


def debiased_winners(verdicts: Sequence[PairwiseVerdict]) -> list[Winner]:
    """Logprob mode: the sign of the mean margin over both orders, which cancels a constant slot bias."""
    out: list[Winner] = []
    for v in verdicts:
        m = v.margin
        out.append("invalid" if m is None else "a" if m > 0 else "b" if m < 0 else "tie")
    return out


# --- agreement --------------------------------------------------------------------------------------------


def cohen_kappa(x: Sequence[str], y: Sequence[str]) -> float | None:
    """Cohen's kappa of two labelings: (p_o - p_e) / (1 - p_e), with chance agreement p_e from the marginals.

    Plain agreement is misleading when one label dominates (GPT-4 wins 96% of AlpacaEval pairs before our coin
    flip); kappa is 0 for a judge no better than chance. None when undefined (both raters constant and equal).
    """
    n = len(x)
    if n == 0 or n != len(y):
        return None
    p_o = sum(a == b for a, b in zip(x, y, strict=True)) / n
    cx, cy = Counter(x), Counter(y)
    p_e = sum(cx[k] * cy[k] for k in cx) / (n * n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def agreement(
    winners: Sequence[Winner], labels: Sequence[Label], first: Sequence[OrderVerdict] | None = None
) -> dict[str, float | int | None]:
    """Agreement of a judge's item winners with the labels.

    ``agreement`` counts inconsistent and invalid items as wrong; ``agreement_consistent`` uses the consistent
    items only (None if there are none); ``kappa`` is Cohen's kappa over all items, with "inconsistent" and
    "invalid" as categories of their own. ``position_bias``, given the first-order verdicts, is the fraction of
    first-order wins (A or B) that went to slot A: 0.5 is unbiased.
    """
    if len(winners) != len(labels):
        raise ValueError(f"{len(winners)} winners for {len(labels)} labels")
    n = len(labels)
    consistent = [(w, lab) for w, lab in zip(winners, labels, strict=True) if w in ("a", "b", "tie")]
    report: dict[str, float | int | None] = {
        "n": n,
        "agreement": sum(w == lab for w, lab in zip(winners, labels, strict=True)) / n if n else None,
        "agreement_consistent": sum(w == lab for w, lab in consistent) / len(consistent) if consistent else None,
        "consistency": len(consistent) / n if n else None,
        "kappa": cohen_kappa(list(winners), list(labels)),
    }
    if first is not None:
        decided = [v for v in first if v in ("A", "B")]
        report["position_bias"] = sum(v == "A" for v in decided) / len(decided) if decided else None
    return report


def evaluate_judge(
    engine: Engine,
    items: Sequence[Mapping[str, Any]],
    *,
    mode: JudgeMode = "logprob",
    max_output_tokens: int | None = 256,
    template: str | os.PathLike[str] | None = None,
    params: GenerationParams | None = None,
) -> dict[str, Any]:
    """Run ``judge_pairwise`` on labelled items (from ``sample_pairs``) and report its agreement and summary.

    In logprob mode ``debiased`` adds the agreement of the position-debiased margin (``debiased_winners``).
    """
    verdicts = judge_pairwise(
        engine, items, mode=mode, max_output_tokens=max_output_tokens, template=template, params=params
    )
    labels: list[Label] = [it["label"] for it in items]
    report: dict[str, Any] = agreement([v.winner for v in verdicts], labels, [v.first for v in verdicts])
    report["summary"] = summarize_pairwise(verdicts)
    if mode == "logprob":
        report["debiased"] = agreement(debiased_winners(verdicts), labels)
    return report
