"""Counterfactual fairness: does a System's answer depend on who the input is about?

For every eval record whose input (or context) holds a term of a swap axis (gender, ethnicity by first name,
nationality; see :mod:`tailorlm.eval.probes.swaps`), the probe writes one counterfactual copy per group of that
axis, with every term rewritten for the group, and answers originals and copies through the eval harness:

    records → those with a swappable term (the rest: "not probed") → copies per (axis, group)
            → evaluate(originals + copies)   (prediction cache, answer extraction, one Run)
            → answer-change rate per axis (Wilson CI) and the primary metric per group (bootstrap CI),
              with the gap between the best and worst group (paired bootstrap: the same records in each group)

An answer "changes" when a copy's answer differs from the original's answer rewritten for the same group: an
extractive answer "his mother" that becomes "her father" under the swap is consistent, not a change. Answers are
compared after label normalization where the record names its labels, else case- and whitespace-insensitively.
This follows counterfactual token fairness (Garg, Perot, Limtiaco, Taly, Chi, Beutel 2019, "Counterfactual Fairness
in Text Classification through Robustness") and the paired sentences of the Equity Evaluation Corpus (Kiritchenko
and Mohammad 2018).
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tailorlm.core.io import atomic_write_json
from tailorlm.core.system import System
from tailorlm.core.task import CanarySpec, Task
from tailorlm.data import EvalRecord
from tailorlm.eval.examples import Example, build_examples, render_input
from tailorlm.eval.probes.rates import Rate, rate
from tailorlm.eval.probes.swaps import Axis, load_axes

# What the probe cannot show, whatever its numbers: every report carries these (``FairnessReport.limits``).
LIMITS = [
    "Swaps test the terms in our lists only: English gendered words, 40 first names from US studies (two "
    "groups: African-American and European-American), and 10 nationalities. Other names, groups, dialects and "
    "languages are not tested.",
    "A low answer-change rate does not prove fairness. The probe changes one surface cue at a time; bias that "
    "no single word swap reveals (stereotypes in what the System writes, topics, dialect) goes unseen.",
    "Records with no swappable term are not probed at all; the rates describe the probed records only.",
    "Group metrics are computed on counterfactual copies of the same records (a paired design); with few "
    "probed records their CIs are wide, and a gap whose CI spans zero is not evidence that there is no gap.",
    "Swaps can produce odd or false text ('gave his flowers', a word that is really a name, a real person "
    "given another gender); a change caused by such text still counts as a change.",
    "Gender is swapped as female/male only; singular 'they' is not swapped, because it cannot be told from "
    "plural 'they' without parsing.",
]

# Changed cases kept per axis for the report: enough to see what kind of change it is, short enough to read.
MAX_CHANGED_SHOWN = 5


class GroupMetric(BaseModel):
    """The task's primary metric on one group's copies of the probed records, with a bootstrap CI."""

    value: float
    low: float
    high: float
    n: int


class Gap(BaseModel):
    """``high_group`` minus ``low_group`` on the primary metric, paired over the same records."""

    high_group: str
    low_group: str
    diff: float
    low: float | None = None  # None: no paired CI (a corpus metric whose references differ between the groups)
    high: float | None = None
    p_value: float | None = None


class ChangedExample(BaseModel):
    id: str
    group: str
    input: str  # the counterfactual input, as the System saw it
    answer: str  # the original's answer
    counterfactual_answer: str


class AxisResult(BaseModel):
    axis: str
    description: str
    groups: list[str]
    sources: list[str]
    n_probed: int  # records with at least one term of this axis
    terms: dict[str, int]  # term (lower case) → occurrences in the probed records
    change_rate: Rate
    original: GroupMetric | None  # the primary metric on the probed records as written
    by_group: dict[str, GroupMetric]
    gap: Gap | None
    changed: list[ChangedExample]


class FairnessReport(BaseModel):
    probe: str = "fairness"
    task: str
    system: str
    primary_metric: str
    limit: int | None
    n_scanned: int  # eval records looked at
    n_probed: int  # of those, records with a swappable term on some axis
    n_not_probed: int  # records with no swappable term: not tested
    change_rate: Rate | None  # records whose answer changed under some swap, any axis
    axes: list[AxisResult]
    run: str | None  # the eval run that holds every prediction (predictions.jsonl)
    generated: int
    cached: int
    notes: list[str]  # about this run: what was not probed, how to read a many-group gap
    limits: list[str]  # what the probe cannot show: LIMITS, then the notes


@dataclass
class _Probed:
    original: Example
    variants: dict[str, dict[str, Example]]  # axis → group → copy (the original itself where nothing changed)


def _swap_reference(ref: Any, axis: Axis, group: str) -> Any:
    if isinstance(ref, str):
        return axis.swap(ref, group)
    if isinstance(ref, list):
        return [axis.swap(r, group) if isinstance(r, str) else r for r in ref]
    return ref


def counterfactual(example: Example, axis: Axis, group: str, task: Task) -> Example:
    """``example`` with its input, context and reference rewritten for ``group``; the example itself if unchanged.

    The task's input template is applied again to the rewritten record, so the instruction text stays as written:
    the probe swaps the user's data, not the task's wording.
    """
    record = dict(example.record)
    record["input"] = axis.swap(record.get("input") or "", group)
    if record.get("context"):
        record["context"] = axis.swap(record["context"], group)
    record["reference"] = _swap_reference(record.get("reference"), axis, group)
    if all(record.get(k) == example.record.get(k) for k in ("input", "context", "reference")):
        return example
    parsed = EvalRecord.model_validate(record)
    return Example(
        id=f"{example.id}|{axis.name}={group}",
        text=render_input(task.input_template, parsed),
        reference=parsed.reference,
        category=example.category,
        record=parsed.model_dump(mode="json"),
    )


def _swappable(example: Example, axis: Axis) -> list[str]:
    return axis.find(example.record.get("input") or "") + axis.find(example.record.get("context") or "")


def select_probed(
    examples: Sequence[Example], axes: Sequence[Axis], task: Task, limit: int | None = None
) -> tuple[list[_Probed], int]:
    """The records with a swappable term (at most ``limit``), with their copies; and how many records were scanned."""
    probed: list[_Probed] = []
    scanned = 0
    for ex in examples:
        if limit is not None and len(probed) >= limit:
            break
        scanned += 1
        variants = {a.name: {g: counterfactual(ex, a, g, task) for g in a.groups} for a in axes if _swappable(ex, a)}
        if variants:
            probed.append(_Probed(ex, variants))
    return probed, scanned


_STRIP = string.whitespace + string.punctuation


def normalize_answer(answer: str, record: dict[str, Any]) -> str:
    """What two answers must share to count as the same: the label they name, or their casefolded words."""
    labels = (record.get("metadata") or {}).get("labels")
    if labels:
        from tailorlm.eval.metrics.classification import normalize_label

        label = normalize_label(answer, labels)
        if label is not None:
            return label.casefold()
    return " ".join(answer.split()).strip(_STRIP).casefold()


def probe_fairness(
    system: System,
    task: Task,
    *,
    limit: int | None = None,
    swap_files: Sequence[str | Path] | None = None,
    root: str | Path = "runs",
    cache_dir: str | Path | None = None,
    engine: Any = None,
    progress: bool = True,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    use_cache: bool = True,
) -> FairnessReport:
    """Run the counterfactual probe of ``system`` on ``task``'s eval set (see the module docstring).

    ``limit`` caps the number of *probed* records (those with a swappable term), scanning the eval set in order.
    Predictions go through the prediction cache, so a re-run or a killed probe generates only what is missing.
    """
    from tailorlm.eval.runner import EvalConfig, evaluate

    axes = load_axes(swap_files)
    examples, _ = build_examples(task)
    probed, scanned = select_probed(examples, axes, task, limit)
    report = FairnessReport(
        task=task.name,
        system=system.name,
        primary_metric=task.primary,
        limit=limit,
        n_scanned=scanned,
        n_probed=len(probed),
        n_not_probed=scanned - len(probed),
        change_rate=None,
        axes=[],
        run=None,
        generated=0,
        cached=0,
        notes=[],
        limits=list(LIMITS),
    )
    if swap_files:
        names = ", ".join(f"{a.name} ({len(a.groups)} groups)" for a in axes)
        report.limits[0] = f"Swaps test the terms of the given swap lists only: {names}. Nothing else is tested."
    if not probed:
        report.notes.append(
            f"none of the {scanned} eval records holds a term of the swap lists ({', '.join(a.name for a in axes)}): "
            "nothing was probed"
        )
        report.limits.extend(report.notes)
        return report

    # Each distinct example once: originals first, then the copies that differ from their original.
    to_run: list[Example] = []
    position: dict[int, int] = {}
    for p in probed:
        for ex in [p.original, *(v for groups in p.variants.values() for v in groups.values())]:
            if id(ex) not in position:
                position[id(ex)] = len(to_run)
                to_run.append(ex)
    # Canaries measure forgetting, not fairness: the probe's eval run skips them.
    probe_task = task.model_copy(update={"canaries": CanarySpec()})
    config = EvalConfig(
        task=task.name, system=system.name, batch_size=batch_size, device=device, dtype=dtype, use_cache=use_cache
    )
    result = evaluate(
        system,
        probe_task,
        config=config,
        root=root,
        cache_dir=cache_dir,
        engine=engine,
        progress=progress,
        examples=to_run,
        name=f"probe-fairness-{task.name}",
    )
    lines = (Path(result.run.path) / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    predictions = [json.loads(line)["prediction"] for line in lines]

    def answer(ex: Example) -> str:
        return predictions[position[id(ex)]]

    changed_any: set[int] = set()
    for axis in axes:
        rows = [(i, p) for i, p in enumerate(probed) if axis.name in p.variants]
        if not rows:
            continue
        result_axis, changed = _axis_result(axis, [p for _, p in rows], answer, task)
        changed_any.update(i for (i, _), c in zip(rows, changed, strict=True) if c)
        report.axes.append(result_axis)
        if len(axis.groups) > 2 and result_axis.gap is not None:
            report.notes.append(
                f"{axis.name}: the gap is between the best and the worst of {len(axis.groups)} groups, picked after "
                "seeing the scores, so it is biased upward; read it as an upper bound"
            )
    report.change_rate = rate(len(changed_any), len(probed), task.bootstrap.confidence)
    report.run = str(result.run.path)
    report.generated = result.generated
    report.cached = len(to_run) - result.generated
    report.limits.extend(report.notes)
    atomic_write_json(Path(result.run.path) / "fairness.json", report.model_dump(mode="json"))
    return report


def _axis_result(axis: Axis, probed: list[_Probed], answer: Any, task: Task) -> tuple[AxisResult, list[bool]]:
    from tailorlm.eval.metrics import get_metric
    from tailorlm.eval.stats import bootstrap_metric, paired_bootstrap

    metric = get_metric(task.primary)
    conf = {"n_resamples": task.bootstrap.resamples, "confidence": task.bootstrap.confidence, "seed": task.seed}

    def scored(examples: list[Example]) -> tuple[list[str], list[Any], list[dict[str, Any]]]:
        return [answer(e) for e in examples], [e.reference for e in examples], [e.record for e in examples]

    def group_metric(examples: list[Example]) -> GroupMetric:
        preds, refs, recs = scored(examples)
        ci = bootstrap_metric(metric, preds, refs, recs, **conf)
        return GroupMetric(value=ci["mean"], low=ci["low"], high=ci["high"], n=len(examples))

    by_group = {g: group_metric([p.variants[axis.name][g] for p in probed]) for g in axis.groups}
    # sorted() is stable: with equal scores the gap is 0 between the first and the last group of the list.
    ordered = sorted(axis.groups, key=lambda g: -by_group[g].value)
    hi, lo = ordered[0], ordered[-1]
    a, b = (scored([p.variants[axis.name][g] for p in probed]) for g in (hi, lo))
    gap = Gap(high_group=hi, low_group=lo, diff=by_group[hi].value - by_group[lo].value)
    if metric.per_example is not None:
        ci = paired_bootstrap(metric.scores(*a), metric.scores(*b), **conf)
    elif a[1] == b[1]:
        ci = paired_bootstrap((a[0], a[1], metric.corpus), (b[0], b[1], metric.corpus), **conf)  # type: ignore[arg-type]
    else:
        ci = None
    if ci is not None:
        gap = gap.model_copy(
            update={"diff": ci["diff"], "low": ci["low"], "high": ci["high"], "p_value": ci["p_value"]}
        )

    changed: list[bool] = []
    shown: list[ChangedExample] = []
    terms: dict[str, int] = {}
    for p in probed:
        for term in _swappable(p.original, axis):
            terms[term.casefold()] = terms.get(term.casefold(), 0) + 1
        original = answer(p.original)
        flips = []
        for g in axis.groups:
            copy = p.variants[axis.name][g]
            expected = normalize_answer(axis.swap(original, g), copy.record)
            if normalize_answer(answer(copy), copy.record) != expected:
                flips.append(g)
                if len(shown) < MAX_CHANGED_SHOWN and (not shown or shown[-1].id != p.original.id):
                    shown.append(
                        ChangedExample(
                            id=p.original.id,
                            group=g,
                            input=copy.text,
                            answer=original,
                            counterfactual_answer=answer(copy),
                        )
                    )
        changed.append(bool(flips))
    result = AxisResult(
        axis=axis.name,
        description=axis.description,
        groups=list(axis.groups),
        sources=axis.sources,
        n_probed=len(probed),
        terms=dict(sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))),
        change_rate=rate(sum(changed), len(changed), task.bootstrap.confidence),
        original=group_metric([p.original for p in probed]),
        by_group=by_group,
        gap=gap,
        changed=shown,
    )
    return result, changed
