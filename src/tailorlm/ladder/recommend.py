"""Which rung to ship: the best, the cheapest one that is as good, and the best under a compute or latency budget.

    rec = recommend(results, primary="f1", budgets=task.budgets, seed=task.seed)
    rec.chosen          # the rung whose System goes to best/system.yaml (= rec.cheapest_equivalent.rung)
    rec.steps           # for each rung: does it beat the rung below it on the ladder?

Statistics. Every comparison is a paired bootstrap (``tailorlm.eval.stats.paired_bootstrap``, 2,000 resamples,
95% percentile interval) of the per-example primary-metric scores in the two rungs' ``predictions.jsonl``, on the
examples both rungs scored. Two rungs are *statistically indistinguishable* when the interval of their difference
contains 0. A rung without per-example scores (a corpus metric such as BLEU, or a missing predictions file) cannot be
paired, so it is never called indistinguishable from a better rung: the recommendation errs towards quality.

Picks (complete rungs only; failed and skipped ones are listed in ``ignored``, never picked):

- ``best_quality``: the highest primary metric (lowest for a lower-is-better metric).
- ``cheapest_equivalent``: among the rungs indistinguishable from the best, the cheapest. *Cheapest* means the
  lowest build cost, ``build.wall_s``; build times within ``BUILD_TIE_S`` of the lowest count as a tie (rungs that
  build nothing differ only by timer noise), broken by serving latency ``serve.latency_p50_s``, then by ladder
  order (the order of ``results``). An unknown cost sorts after every known one. This is ``chosen``.
- ``limited_compute``: the best rung that needs no training (family ``prompting`` or ``rag``), or, when
  ``budgets.time_minutes`` is set, the best rung whose build time fits in it.
- ``lowest_latency``: the fastest (p50) of the rungs indistinguishable from the best; when
  ``budgets.latency_p50_s`` is set, the best rung that meets it.

A rung whose forgetting canaries say ``promotable: false`` is still eligible for ``best_quality`` (it is a fact
about the ladder) but not for the other picks: the canaries exist to stop such a System from being shipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from tailorlm.core.task import BudgetSpec
from tailorlm.errors import TailorError
from tailorlm.eval.report.build import N_BOOTSTRAP, read_predictions
from tailorlm.eval.stats import paired_bootstrap
from tailorlm.ladder.result import Paired, Quality, RungResult

CONFIDENCE = 0.95
# Rungs that build nothing (zero-shot, few-shot, chain-of-thought) report build times that differ by fractions of a
# second of timer noise; within this margin serving latency decides which is cheaper.
BUILD_TIE_S = 1.0
NO_TRAINING_FAMILIES = frozenset({"prompting", "rag"})
# The rung each rung is meant to improve on: the comparison that says whether the extra step paid for itself.
DEFAULT_BELOW: dict[str, str] = {
    "few-shot": "zero-shot",
    "chain-of-thought": "zero-shot",
    "optimized-prompt": "few-shot",
    "rag": "zero-shot",
    "rag-few-shot": "rag",
    "lora": "few-shot",
    "rag-lora": "rag",
    "head": "few-shot",
}


# --- the model -----------------------------------------------------------------------------------------------


class Pick(BaseModel):
    """One recommendation: a rung (None when no rung qualifies) and why, in plain words with the figures."""

    rung: str | None = Field(None, description="Rung id, e.g. rag-lora; None when no rung qualifies.")
    title: str | None = None
    reason: str


class Step(BaseModel):
    """A rung against the rung below it on the ladder: did the extra step pay?"""

    rung: str
    below: str | None = Field(None, description="The rung compared against; None when none below it completed.")
    paired: Paired | None = Field(None, description="rung − below on the primary metric.")
    beats: bool | None = Field(None, description="The CI excludes 0 in the better direction; None: not compared.")
    secondary: dict[str, Paired] = Field(
        default_factory=dict, description="rung − below on each other per-example metric of the task."
    )
    sentence: str


class Ignored(BaseModel):
    """A rung the picks leave out, and why."""

    rung: str
    title: str
    status: str
    why: str


class Recommendation(BaseModel):
    primary: str
    higher_is_better: bool = True
    baseline: str | None = Field(None, description="The baseline rung, when it completed.")
    best_quality: Pick
    cheapest_equivalent: Pick
    limited_compute: Pick
    lowest_latency: Pick
    chosen: str | None = Field(None, description="The rung written to best/system.yaml: cheapest_equivalent.")
    system: str | None = Field(None, description="The chosen rung's system.yaml.")
    reason: str
    equivalent: list[str] = Field(
        default_factory=list, description="Rungs statistically indistinguishable from the best, the best included."
    )
    comparisons: dict[str, Paired] = Field(default_factory=dict, description="rung − best_quality, per rung.")
    vs_baseline: dict[str, Paired] = Field(default_factory=dict, description="rung − baseline, per rung.")
    steps: list[Step] = Field(default_factory=list)
    ignored: list[Ignored] = Field(default_factory=list, description="Failed, skipped and unscored rungs.")
    notes: list[str] = Field(default_factory=list)
    seed: int = 0
    n_resamples: int = N_BOOTSTRAP
    confidence: float = CONFIDENCE


# --- formatting ----------------------------------------------------------------------------------------------


def fmt_signed(x: float, digits: int = 3) -> str:
    """``+0.120`` / ``−0.010``: signed, with a true minus sign, because the sign is the point."""
    return f"{x:+.{digits}f}".replace("-", "−")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "p=?"
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def fmt_paired(d: Paired, digits: int = 3) -> str:
    """``−0.200 [−0.260, −0.150], p=0.002``."""
    ci = f"{fmt_signed(d.diff, digits)} [{fmt_signed(d.low, digits)}, {fmt_signed(d.high, digits)}]"
    return f"{ci}, {fmt_p(d.p_value)}"


def fmt_vs(d: Paired, other: str, digits: int = 3) -> str:
    """``−0.017 [−0.067, +0.033] vs RAG + LoRA, p=0.79``."""
    ci = f"{fmt_signed(d.diff, digits)} [{fmt_signed(d.low, digits)}, {fmt_signed(d.high, digits)}]"
    return f"{ci} vs {other}, {fmt_p(d.p_value)}"


def fmt_quality(q: Quality, digits: int = 3) -> str:
    """``f1 0.250 [0.200, 0.310]``, or the bare value when the eval run gave no interval."""
    if q.low is None or q.high is None:
        return f"{q.metric} {q.value:.{digits}f}"
    return f"{q.metric} {q.value:.{digits}f} [{q.low:.{digits}f}, {q.high:.{digits}f}]"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 10:
        return f"{s:.2f} s"
    return f"{s:.1f} s" if s < 100 else f"{s:,.0f} s"


# --- reading the rungs ---------------------------------------------------------------------------------------


@dataclass(eq=False)  # identity: rungs are compared with `is` and `in`, never by value
class _Rung:
    """A complete rung with what the picks need, read once."""

    result: RungResult
    order: int
    quality: Quality
    scores: dict[str, float] | None  # example id -> primary score, in eval-set order; None: cannot be paired
    why_unpaired: str | None = None
    # The task's other metrics, example id -> score: a step verdict reports them next to the primary one.
    secondary: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.result.name

    @property
    def title(self) -> str:
        return self.result.title

    @property
    def wall(self) -> float | None:
        return self.result.build.wall_s if self.result.build is not None else None

    @property
    def latency(self) -> float | None:
        return self.result.serve.latency_p50_s if self.result.serve is not None else None

    @property
    def promotable(self) -> bool:
        return not (isinstance(self.result.canaries, dict) and self.result.canaries.get("promotable") is False)


def _read_metrics_json(run: RungResult) -> dict[str, Any]:
    if not run.eval_run:
        return {}
    path = Path(run.eval_run) / "metrics.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _quality(run: RungResult, primary: str, metrics_json: dict[str, Any]) -> Quality | None:
    if primary in run.metrics:
        return run.metrics[primary]
    if run.quality is not None and run.quality.metric == primary:
        return run.quality
    # The runner fills these from metrics.json; read it ourselves if it did not.
    raw = (metrics_json.get("metrics") or {}).get(primary)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return Quality(metric=primary, value=float(raw), n=int(metrics_json.get("n") or 0))
    if isinstance(raw, dict) and isinstance(raw.get("value"), int | float):
        low, high = raw.get("low"), raw.get("high")
        return Quality(
            metric=primary,
            value=float(raw["value"]),
            low=float(low) if isinstance(low, int | float) else None,
            high=float(high) if isinstance(high, int | float) else None,
            n=int(metrics_json.get("n") or 0),
        )
    return None


def _scores(run: RungResult, primary: str) -> tuple[dict[str, dict[str, float]], str | None]:
    """Per-example scores of every metric from the eval run's predictions.jsonl, and why the primary is missing."""
    if not run.eval_run:
        return {}, "it has no eval run"
    path = Path(run.eval_run) / "predictions.jsonl"
    if not path.is_file():
        return {}, f"{path} is missing"
    try:
        records = read_predictions(path)
    except TailorError as err:
        return {}, str(err)
    by_metric: dict[str, dict[str, float]] = {}
    for r in records:
        for metric, value in r["scores"].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                by_metric.setdefault(metric, {})[r["id"]] = float(value)
    if primary not in by_metric:
        return by_metric, f"its predictions.jsonl has no per-example {primary} scores (a corpus-level metric?)"
    return by_metric, None


def _higher_is_better(primary: str, metrics_jsons: Sequence[dict[str, Any]]) -> bool:
    # The eval run states the direction; the metric registry knows it too; "higher is better" otherwise.
    for m in metrics_jsons:
        entry = (m.get("metrics") or {}).get(primary)
        if isinstance(entry, dict) and isinstance(entry.get("higher_is_better"), bool):
            return bool(entry["higher_is_better"])
    try:
        from tailorlm.eval.metrics import get_metric

        return get_metric(primary).higher_is_better
    except TailorError:
        return True


# --- statistics ----------------------------------------------------------------------------------------------


@dataclass
class _Pairer:
    """Paired differences between rungs, computed once per ordered pair with the same seed."""

    seed: int
    cache: dict[tuple[str, str], Paired | None] = field(default_factory=dict)

    def __call__(self, a: _Rung, b: _Rung) -> Paired | None:
        """``a − b`` on the examples both scored; None when either has no per-example scores or they share none."""
        key = (a.name, b.name)
        if key not in self.cache:
            self.cache[key] = self._compute(a, b)
        return self.cache[key]

    def metric(self, a: _Rung, b: _Rung, metric: str) -> Paired | None:
        """``a − b`` on one of the task's other metrics (not cached: only the step verdicts ask)."""
        return self._paired(a.secondary.get(metric), b.secondary.get(metric), b.name)

    def _compute(self, a: _Rung, b: _Rung) -> Paired | None:
        if a.name == b.name:
            return Paired(other=b.name, diff=0.0, low=0.0, high=0.0, p_value=1.0)
        return self._paired(a.scores, b.scores, b.name)

    def _paired(self, a: Mapping[str, float] | None, b: Mapping[str, float] | None, other: str) -> Paired | None:
        if a is None or b is None:
            return None
        # In a's eval-set order, so the resampling (and hence the interval) is deterministic for a given seed.
        ids = [i for i in a if i in b]
        if not ids:
            return None
        xa = np.array([a[i] for i in ids], dtype=np.float64)
        xb = np.array([b[i] for i in ids], dtype=np.float64)
        s = paired_bootstrap(xa, xb, n_resamples=N_BOOTSTRAP, confidence=CONFIDENCE, seed=self.seed)
        return Paired(other=other, diff=s["diff"], low=s["low"], high=s["high"], p_value=s["p_value"])


def _contains_zero(d: Paired) -> bool:
    return d.low <= 0.0 <= d.high


# --- the picks -----------------------------------------------------------------------------------------------


def _inf(x: float | None) -> float:
    return math.inf if x is None else x


def _cheapest(cands: Sequence[_Rung]) -> tuple[_Rung, bool]:
    """The cheapest rung, and whether latency had to break a tie in build time (see the module docstring)."""
    known = [c.wall for c in cands if c.wall is not None]
    floor = min(known) if known else None
    tied = (
        [c for c in cands if c.wall is None]
        if floor is None
        else [c for c in cands if c.wall is not None and c.wall <= floor + BUILD_TIE_S]
    )
    pick = min(tied, key=lambda c: (_inf(c.latency), _inf(c.wall), c.order))
    return pick, len(tied) > 1


def _cost_key(c: _Rung) -> tuple[float, float, int]:
    return (_inf(c.wall), _inf(c.latency), c.order)


def _best(cands: Sequence[_Rung], hib: bool) -> tuple[_Rung, list[_Rung]]:
    """The best-scoring rung (ties on the mean go to the cheaper), and the others it tied with."""
    target = max(c.quality.value for c in cands) if hib else min(c.quality.value for c in cands)
    tied = [c for c in cands if math.isclose(c.quality.value, target, rel_tol=1e-12, abs_tol=1e-12)]
    pick = min(tied, key=_cost_key)
    return pick, [c for c in tied if c is not pick]


def _costs(r: _Rung) -> str:
    return f"builds in {fmt_seconds(r.wall)}, answers in p50 {fmt_seconds(r.latency)}"


def _unpromotable(r: _Rung) -> str:
    drop = r.result.canaries.get("drop") if isinstance(r.result.canaries, dict) else None
    figure = f" (canary drop {drop:.3f})" if isinstance(drop, int | float) else ""
    return f"{r.title} is NOT PROMOTABLE{figure}"


def _empty(results: Sequence[RungResult], primary: str, ignored: list[Ignored], seed: int) -> Recommendation:
    if results:
        counts: dict[str, int] = {}
        for i in ignored:
            label = i.status if i.status != "complete" else f"complete without {primary}"
            counts[label] = counts.get(label, 0) + 1
        detail = ", ".join(f"{n} {label}" for label, n in counts.items())
        why = f"No rung completed with a {primary} score ({detail}): nothing to recommend."
    else:
        why = "The ladder ran no rungs: nothing to recommend."
    none = Pick(reason=why)
    return Recommendation(
        primary=primary, best_quality=none, cheapest_equivalent=none, limited_compute=none, lowest_latency=none,
        reason=why, ignored=ignored, seed=seed,
    )  # fmt: skip


def recommend(
    results: list[RungResult],
    *,
    primary: str,
    budgets: BudgetSpec | None = None,
    baseline: str = "zero-shot",
    seed: int = 0,
    below: Mapping[str, str] | None = None,
) -> Recommendation:
    """Pick the rungs to recommend from ``results`` (in ladder order); see the module docstring for the rules.

    ``below`` maps a rung to the rung it should beat (default ``DEFAULT_BELOW``); a rung it does not name is
    compared with ``baseline``. The same ``seed`` gives the same intervals.
    """
    below = DEFAULT_BELOW if below is None else below
    budgets = budgets or BudgetSpec()
    titles = {r.name: r.title for r in results}
    status = {r.name: r for r in results}

    ignored: list[Ignored] = []
    rungs: list[_Rung] = []
    jsons: list[dict[str, Any]] = []
    notes: list[str] = []
    for order, r in enumerate(results):
        if r.status == "failed":
            ignored.append(
                Ignored(rung=r.name, title=r.title, status="failed", why=r.error or "failed (no error recorded)")
            )
            continue
        if r.status == "skipped":
            ignored.append(Ignored(rung=r.name, title=r.title, status="skipped", why=r.reason or "skipped"))
            continue
        mj = _read_metrics_json(r)
        jsons.append(mj)
        q = _quality(r, primary, mj)
        if q is None:
            ignored.append(Ignored(rung=r.name, title=r.title, status=r.status, why=f"no {primary} figure"))
            continue
        by_metric, why = _scores(r, primary)
        scores = by_metric.pop(primary, None)
        rungs.append(_Rung(result=r, order=order, quality=q, scores=scores, why_unpaired=why, secondary=by_metric))
        if why:
            notes.append(f"{r.title} cannot be paired with other rungs: {why}.")
    if not rungs:
        return _empty(results, primary, ignored, seed)

    hib = _higher_is_better(primary, jsons)
    pair = _Pairer(seed)
    by_name = {r.name: r for r in rungs}
    base = by_name.get(baseline)

    # --- best quality, and who is indistinguishable from it
    best, tied = _best(rungs, hib)
    comparisons: dict[str, Paired] = {}
    for r in rungs:
        d = pair(r, best)
        if d is not None:
            comparisons[r.name] = d
    equivalent = [r for r in rungs if r is best or (r.name in comparisons and _contains_zero(comparisons[r.name]))]
    others = [r for r in rungs if r is not best and r.name in comparisons]
    if len(rungs) == 1:
        best_reason = f"{best.title} scores {fmt_quality(best.quality)}; it is the only complete rung."
    else:
        close = [r for r in others if r in equivalent]
        if close:
            listed = "; ".join(f"{r.title}: {fmt_paired(comparisons[r.name])}" for r in close)
            best_reason = (
                f"{best.title} scores {fmt_quality(best.quality)}, the best of {len(rungs)} complete rungs; "
                f"statistically indistinguishable from it: {listed}."
            )
        elif others:
            nearest = max(others, key=lambda r: comparisons[r.name].diff if hib else -comparisons[r.name].diff)
            best_reason = (
                f"{best.title} scores {fmt_quality(best.quality)}; no other rung comes within its CI "
                f"({nearest.title}: {fmt_paired(comparisons[nearest.name])})."
            )
        else:
            best_reason = (
                f"{best.title} scores {fmt_quality(best.quality)}, the best; no other rung could be paired with it."
            )
        if tied:
            best_reason += f" It ties on the mean with {', '.join(t.title for t in tied)}; the cheaper is listed."
    if not hib:
        best_reason += f" ({primary}: lower is better.)"
    best_pick = Pick(rung=best.name, title=best.title, reason=best_reason)
    if not best.promotable:
        notes.append(f"{_unpromotable(best)}: it is the best on {primary} but is not recommended for shipping.")

    # --- cheapest equivalent (= chosen)
    promotable_eq = [r for r in equivalent if r.promotable]
    blocked = [r for r in equivalent if not r.promotable]
    blocked_note = f" ({'; '.join(_unpromotable(r) for r in blocked)}: left out.)" if blocked else ""
    if promotable_eq:
        cheap, tie = _cheapest(promotable_eq)
        tie_note = f" (build times within {BUILD_TIE_S:g} s count as equal; p50 latency broke the tie.)" if tie else ""
        if cheap is not best:
            d = comparisons[cheap.name]
            cheap_reason = (
                f"{cheap.title} is the cheapest rung statistically indistinguishable from the best ({best.title}): "
                f"{fmt_quality(cheap.quality)}, {fmt_vs(d, best.title)}; it {_costs(cheap)} "
                f"(vs {fmt_seconds(best.wall)} and {fmt_seconds(best.latency)})."
            )
        elif len(equivalent) > 1:
            cheap_reason = (
                f"{best.title} is the best and also the cheapest of the {len(equivalent)} rungs statistically "
                f"indistinguishable from it; it {_costs(cheap)}."
            )
        else:
            cheap_reason = f"{best.title} is the best and nothing cheaper comes within its CI; it {_costs(cheap)}."
        cheap_pick = Pick(rung=cheap.name, title=cheap.title, reason=cheap_reason + tie_note + blocked_note)
    else:
        fallback = [r for r in rungs if r.promotable]
        if fallback:
            cheap, _ = _best(fallback, hib)
            d2 = comparisons.get(cheap.name)
            vs = f", {fmt_vs(d2, best.title)}" if d2 is not None else ""
            cheap_pick = Pick(
                rung=cheap.name,
                title=cheap.title,
                reason=(
                    f"No promotable rung is statistically indistinguishable from the best{blocked_note} The best "
                    f"promotable rung is {cheap.title}: {fmt_quality(cheap.quality)}{vs}; it {_costs(cheap)}."
                ),
            )
        else:
            cheap_pick = Pick(
                reason=f"Every complete rung is NOT PROMOTABLE (canaries): nothing to ship.{blocked_note}"
            )

    # --- limited compute
    if budgets.time_minutes is not None:
        limit_s = budgets.time_minutes * 60
        scope = f"rungs that build within the {budgets.time_minutes:g}-minute budget ({limit_s:,.0f} s)"
        pool = [r for r in rungs if r.wall is not None and r.wall <= limit_s]
    else:
        scope = "rungs that need no training (prompting or RAG)"
        pool = [r for r in rungs if r.result.family in NO_TRAINING_FAMILIES]
    limited_pick = _pick_best_of(pool, [r for r in pool if r.promotable], scope, best, comparisons, hib)

    # --- lowest latency
    if budgets.latency_p50_s is not None:
        limit = budgets.latency_p50_s
        meets = [r for r in rungs if r.latency is not None and r.latency <= limit]
        latency_pick = _pick_best_of(
            meets,
            [r for r in meets if r.promotable],
            f"rungs that answer within the p50 budget of {fmt_seconds(limit)}",
            best,
            comparisons,
            hib,
            none_reason=lambda: _fastest_note(rungs, f"No rung meets the p50 latency budget of {fmt_seconds(limit)}"),
        )
    else:
        timed = [r for r in promotable_eq if r.latency is not None]
        shippable = "promotable " if blocked else ""
        if timed:
            fast = min(timed, key=lambda r: (r.latency, _inf(r.wall), r.order))
            d = comparisons[fast.name]
            vs = "" if fast is best else f", {fmt_vs(d, best.title)}"
            n = len(promotable_eq)
            which = f"the fastest of the {n} {shippable}rungs" if n > 1 else f"the only {shippable}rung"
            latency_pick = Pick(
                rung=fast.name,
                title=fast.title,
                reason=(
                    f"{fast.title} is {which} statistically indistinguishable from the best: "
                    f"p50 {fmt_seconds(fast.latency)}; {fmt_quality(fast.quality)}{vs}."
                ),
            )
        elif fallback := [r for r in rungs if r.promotable and r.latency is not None]:
            # The best is not shippable and nothing shippable matches it: the fastest shippable rung, said so.
            fast = min(fallback, key=lambda r: (r.latency, _inf(r.wall), r.order))
            latency_pick = Pick(
                rung=fast.name,
                title=fast.title,
                reason=(
                    f"No promotable rung is statistically indistinguishable from the best; the fastest promotable "
                    f"rung is {fast.title}: p50 {fmt_seconds(fast.latency)}; {fmt_quality(fast.quality)}."
                ),
            )
        else:
            latency_pick = Pick(reason="No rung indistinguishable from the best reported a p50 latency.")

    # --- steps and the baseline
    steps = [
        _step(r, by_name, titles, status, below, baseline, pair, hib, primary) for r in rungs if r.name != baseline
    ]
    vs_baseline = {}
    if base is not None:
        for r in rungs:
            if r is not base and (d := pair(r, base)) is not None:
                vs_baseline[r.name] = d
    elif baseline in status:
        notes.append(f"The baseline ({titles[baseline]}) did not complete: no differences vs baseline.")

    if budgets.memory_gb is not None:
        for r in rungs:
            peak = r.result.build.peak_rss_mb if r.result.build is not None else None
            if peak is not None and peak > budgets.memory_gb * 1024:
                notes.append(f"{r.title} peaked at {peak:,.0f} MB, over the {budgets.memory_gb:g} GB memory budget.")

    chosen = by_name.get(cheap_pick.rung) if cheap_pick.rung else None
    reason = (
        f"Chosen: {chosen.title} (written to best/system.yaml). {cheap_pick.reason}"
        if chosen is not None
        else cheap_pick.reason
    )
    return Recommendation(
        primary=primary,
        higher_is_better=hib,
        baseline=base.name if base is not None else None,
        best_quality=best_pick,
        cheapest_equivalent=cheap_pick,
        limited_compute=limited_pick,
        lowest_latency=latency_pick,
        chosen=chosen.name if chosen is not None else None,
        system=chosen.result.system if chosen is not None else None,
        reason=reason,
        equivalent=[r.name for r in equivalent],
        comparisons=comparisons,
        vs_baseline=vs_baseline,
        steps=steps,
        ignored=ignored,
        notes=notes,
        seed=seed,
    )


def _fastest_note(rungs: Sequence[_Rung], head: str) -> str:
    timed = [r for r in rungs if r.latency is not None]
    if not timed:
        return f"{head}; no rung reported a p50 latency."
    fast = min(timed, key=lambda r: (r.latency, r.order))
    return f"{head}; the fastest is {fast.title} at {fmt_seconds(fast.latency)}."


def _pick_best_of(
    pool: Sequence[_Rung],
    eligible: Sequence[_Rung],
    scope: str,
    best: _Rung,
    comparisons: Mapping[str, Paired],
    hib: bool,
    none_reason: Callable[[], str] | None = None,
) -> Pick:
    """The best of ``eligible`` (the promotable part of ``pool``), described against the best overall."""
    if not eligible:
        if none_reason is not None and not pool:
            return Pick(reason=none_reason() + ".")
        return Pick(reason=f"There are no {'complete' if not pool else 'promotable'} {scope}.")
    pick, _ = _best(eligible, hib)
    if pick is best:
        tail = "; it is also the best overall."
    elif (d := comparisons.get(pick.name)) is not None:
        verdict = "indistinguishable from" if _contains_zero(d) else "below"
        tail = f"; vs the best overall ({best.title}): {fmt_paired(d)}, {verdict} it."
    else:
        tail = f"; it could not be paired with the best overall ({best.title})."
    return Pick(
        rung=pick.name,
        title=pick.title,
        reason=f"Of the {scope}, {pick.title} scores best: {fmt_quality(pick.quality)}, {_costs(pick)}{tail}",
    )


def _step(
    r: _Rung,
    by_name: Mapping[str, _Rung],
    titles: Mapping[str, str],
    status: Mapping[str, RungResult],
    below: Mapping[str, str],
    baseline: str,
    pair: _Pairer,
    hib: bool,
    primary: str,
) -> Step:
    """``r`` against the rung below it; when that one did not complete, against the next one down the chain."""
    passed: list[str] = []  # rungs below that did not complete, in the order we walked past them
    seen = {r.name}
    target: str | None = below.get(r.name, baseline)
    while target is not None and target not in by_name:
        if target in seen:  # a cycle in a user-given mapping
            target = None
            break
        seen.add(target)
        st = status.get(target)
        passed.append(f"{titles.get(target, target)} {st.status if st is not None else 'was not run'}")
        target = below.get(target, baseline if target != baseline else None)
    walked = f" ({'; '.join(passed)}, so compared with the next rung down)" if passed else ""
    if target is None:
        return Step(
            rung=r.name,
            sentence=f"{r.title}: no rung below it completed to compare with ({'; '.join(passed) or 'none'}).",
        )
    other = by_name[target]
    d = pair(r, other)
    if d is None:
        means = f"{r.quality.value:.3f} vs {other.quality.value:.3f}"
        return Step(
            rung=r.name, below=other.name,
            sentence=f"{r.title} vs {other.title}: cannot be paired (no shared per-example {primary} scores); "
                     f"{primary} {means}{walked}.",
        )  # fmt: skip
    better = d.low > 0 if hib else d.high < 0
    worse = d.high < 0 if hib else d.low > 0
    if better:
        sentence = f"{r.title} beats {other.title} on {primary}: {fmt_paired(d)}{walked}"
    else:
        sentence = f"{r.title} does NOT beat {other.title} on {primary}: {fmt_paired(d)}{walked}"
        if worse:
            sentence += f"; it scores significantly {'lower' if hib else 'higher (worse)'}"
    # The verdict is the primary metric's; the others are reported beside it, so a step that pays on one metric
    # and not on another says so instead of hiding either.
    secondary = {m: p for m in r.secondary if m in other.secondary and (p := pair.metric(r, other, m)) is not None}
    if secondary:
        sentence += ". Other metrics: " + "; ".join(f"{m} {_signed_verdict(p, m)}" for m, p in secondary.items())
    return Step(rung=r.name, below=other.name, paired=d, beats=better, secondary=secondary, sentence=sentence + ".")


def improves(d: Paired, metric: str) -> bool:
    """The interval of ``rung − below`` on ``metric`` excludes 0 in that metric's better direction."""
    return d.low > 0 if _higher_is_better(metric, []) else d.high < 0


def _signed_verdict(d: Paired, metric: str) -> str:
    """``+0.100 [+0.020, +0.180], p=0.01 (better)``: the difference and which way its interval points."""
    word = "no significant difference" if _contains_zero(d) else "better" if improves(d, metric) else "worse"
    return f"{fmt_paired(d)} ({word})"
