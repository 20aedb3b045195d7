"""Collect eval runs into one ``Report`` model that the HTML and markdown renderers draw.

Input contract: ``docs/eval-runs.md`` (``metrics.json`` + ``predictions.jsonl`` per run). Everything the report
shows is computed here, once, so the renderers only lay it out and ``--json`` prints exactly what the page shows.

Extending: a later producer (the ladder) appends generic ``Table`` sections to ``Report.sections`` and passes
extra chart functions to ``charts.render_charts``; the renderers draw both without knowing what they mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from tailorlm.core.run import RunInfo, load_run
from tailorlm.errors import TailorError
from tailorlm.eval.stats import paired_bootstrap

# Bootstrap resamples for the paired difference: 2,000 puts the 2.5/97.5 percentiles within about ±0.005 of
# their limit for score differences in [-1, 1], which is finer than the three decimals the report prints.
N_BOOTSTRAP = 2000
TOP_CATEGORIES = 15
COST_FIELDS = ("wall_s", "prompt_tokens", "completion_tokens", "tokens_per_s", "latency_p50_s", "peak_rss_mb")


# --- the model ----------------------------------------------------------------------------------------------


class Estimate(BaseModel):
    """A metric value with its confidence interval (``low``/``high`` are None when the run gave none)."""

    value: float
    low: float | None = None
    high: float | None = None


class PairedDiff(BaseModel):
    """``run - baseline`` on the examples both runs scored, with a 95% CI; positive means the run scored higher."""

    diff: float
    low: float
    high: float
    p_value: float | None = None
    n: int | None = Field(None, description="Examples both runs share (None when metrics.json gave the figure).")
    source: Literal["metrics.json", "bootstrap"] = "bootstrap"

    @property
    def significant(self) -> bool:
        """The CI excludes zero."""
        return self.low > 0 or self.high < 0


class RunSummary(BaseModel):
    """One run as the report header lists it."""

    id: str
    label: str = Field(description="Short, unique name for chart legends and table headers.")
    path: str
    name: str | None = None
    system: str | None = None
    task: str | None = None
    kind: str | None = None
    status: str
    error: str | None = None
    created_at: str | None = None
    n: int | None = None
    seed: int | None = None
    versions: dict[str, str] = Field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.status == "complete"


class MetricRow(BaseModel):
    """One metric across runs. Lists are aligned with ``Report.runs``."""

    name: str
    higher_is_better: bool = True
    values: list[Estimate | None]
    best: list[int] = Field(default_factory=list, description="Indices of the best run(s); empty with one run.")
    diffs: list[PairedDiff | None] = Field(default_factory=list, description="vs runs[0]; None for the baseline.")


class CategoryRow(BaseModel):
    category: str
    n: int | None = None
    values: list[float | None]
    best: list[int] = Field(default_factory=list)


class CategoryTable(BaseModel):
    """Per-category values of one metric; rows sorted by example count, largest first."""

    metric: str
    higher_is_better: bool = True
    rows: list[CategoryRow]


class CostRow(BaseModel):
    run: str
    wall_s: float | None = None
    prompt_tokens: float | None = None
    completion_tokens: float | None = None
    tokens_per_s: float | None = None
    latency_p50_s: float | None = None
    peak_rss_mb: float | None = None


class CanaryRow(BaseModel):
    run: str
    before: float | None = None
    after: float | None = None
    drop: float | None = None
    max_drop: float | None = None
    promotable: bool | None = None


class ExampleRow(BaseModel):
    """One example; ``predictions`` and ``scores`` are aligned with ``Report.runs`` (None: that run lacks it)."""

    id: str
    category: str | None = None
    input: str
    reference: list[str]
    predictions: list[str | None]
    scores: list[float | None]
    spread: float | None = None


class ExampleSection(BaseModel):
    metric: str
    mode: Literal["lowest", "disagreement"]
    rows: list[ExampleRow]
    note: str | None = None


class Table(BaseModel):
    """A generic section (title, header, rows of preformatted cells) for producers that extend the report."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str | None = None
    lead: bool = Field(False, description="Draw it first, before the runs (a producer's summary), not last.")


class Report(BaseModel):
    title: str
    created_at: str
    runs: list[RunSummary]
    warnings: list[str] = Field(default_factory=list, description="Shown loudly at the top of the report.")
    primary_metric: str | None = None
    metrics: list[MetricRow] = Field(default_factory=list)
    categories: list[CategoryTable] = Field(default_factory=list)
    cost: list[CostRow] = Field(default_factory=list)
    canaries: list[CanaryRow] = Field(default_factory=list)
    examples: ExampleSection | None = None
    sections: list[Table] = Field(default_factory=list, description="Extra sections, drawn after the built-ins.")
    seed: int = 0


# --- formatting (shared by the renderers) --------------------------------------------------------------------


def fmt_num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_estimate(est: Estimate | None, digits: int = 3) -> str:
    """``0.172 [0.121, 0.224]``, or the bare value when the run reported no interval."""
    if est is None:
        return "—"
    if est.low is None or est.high is None:
        return fmt_num(est.value, digits)
    return f"{fmt_num(est.value, digits)} [{fmt_num(est.low, digits)}, {fmt_num(est.high, digits)}]"


def fmt_diff(d: PairedDiff | None, digits: int = 3) -> str:
    """``+0.052 [+0.010, +0.094]``: signed, because the sign is the point."""
    if d is None:
        return "—"
    return f"{d.diff:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"


def version_rows(report: Report) -> list[tuple[str, list[str]]]:
    """``(package, [version per run])`` for every package any run recorded, in first-seen order."""
    packages: list[str] = []
    for run in report.runs:
        packages.extend(p for p in run.versions if p not in packages)
    return [(p, [run.versions.get(p, "—") for run in report.runs]) for p in packages]


# --- reading runs ---------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _read_metrics(info: RunInfo) -> dict[str, Any]:
    path = info.path / "metrics.json"
    if not path.is_file():
        raise TailorError(
            f"run {info.id} has no {path}", hint="a report reads eval runs (`tailor eval`); see docs/eval-runs.md"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise TailorError(f"{path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise TailorError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise TailorError(f"{path}: no 'metrics' object", hint="is this an eval run? see docs/eval-runs.md")
    return data


def _estimate(path: Path, name: str, raw: Any) -> tuple[Estimate, bool]:
    """A metric entry: ``{"value", "low", "high", "higher_is_better"}`` or a bare number."""
    if (v := _number(raw)) is not None:
        return Estimate(value=v), True
    if isinstance(raw, dict) and (v := _number(raw.get("value"))) is not None:
        hib = raw.get("higher_is_better", True)
        return Estimate(value=v, low=_number(raw.get("low")), high=_number(raw.get("high"))), bool(hib)
    raise TailorError(f"{path}: metrics.{name}: expected a number or {{'value', 'low', 'high'}}, got {raw!r}")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _text(value: Any) -> str:
    # Inputs may be chat message lists or dicts; the report shows them as JSON rather than failing.
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """``predictions.jsonl`` as a list of records; any malformed line is a TailorError naming file and line."""
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TailorError(f"{path}: cannot read: {err}") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise TailorError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(rec, dict):
            raise TailorError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        if not isinstance(rec.get("id"), str | int) or isinstance(rec.get("id"), bool):
            raise TailorError(f"{where}: field 'id' is missing or not a string/integer")
        key = str(rec["id"])
        if key in seen:
            raise TailorError(f"{where}: duplicate id {key!r} (first on line {seen[key]})")
        seen[key] = lineno
        scores = rec.get("scores", {})
        if not isinstance(scores, dict):
            raise TailorError(f"{where}: field 'scores' must be an object of metric -> number")
        clean: dict[str, float] = {}
        for metric, value in scores.items():
            if value is None:  # a metric that could not be computed for this example
                continue
            if (num := _number(value)) is None:
                raise TailorError(f"{where}: scores.{metric}: expected a number, got {value!r}")
            clean[metric] = num
        ref = rec.get("reference")
        refs = [] if ref is None else [_text(r) for r in ref] if isinstance(ref, list) else [_text(ref)]
        category = rec.get("category")
        records.append(
            {
                "id": key,
                "input": _text(rec.get("input")),
                "reference": refs,
                "prediction": _text(rec.get("prediction")),
                "scores": clean,
                "category": None if category is None else str(category),
            }
        )
    return records


# --- statistics ----------------------------------------------------------------------------------------------


def _paired_diff(a: np.ndarray, b: np.ndarray, seed: int) -> PairedDiff:
    """Paired bootstrap of ``mean(a - b)``: resample examples (pairs together), 95% percentile interval.

    Efron & Tibshirani 1993, ch. 13; for NLP systems see Koehn 2004 / Berg-Kirkpatrick et al. 2012. Pairing
    removes the between-example variance both systems share, so the interval is much tighter than comparing two
    unpaired CIs. The statistics live in ``tailorlm.eval.stats.paired_bootstrap``.
    """
    stats = paired_bootstrap(
        np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), n_resamples=N_BOOTSTRAP, seed=seed
    )
    return PairedDiff(**stats, n=len(a))


def _shared_scores(
    base: list[dict[str, Any]], other: list[dict[str, Any]], metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Aligned per-example scores of ``metric`` on the ids both runs scored (in the baseline's order)."""
    other_by_id = {r["id"]: r["scores"] for r in other}
    pairs = [
        (other_by_id[r["id"]][metric], r["scores"][metric])
        for r in base
        if metric in r["scores"] and r["id"] in other_by_id and metric in other_by_id[r["id"]]
    ]
    arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _best(values: Sequence[float | None], higher_is_better: bool) -> list[int]:
    """Indices of the best value (all of them on a tie); empty unless at least two runs have a value."""
    present = [(i, v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if len(present) < 2:
        return []
    target = max(v for _, v in present) if higher_is_better else min(v for _, v in present)
    return [i for i, v in present if math.isclose(v, target, rel_tol=1e-12, abs_tol=1e-12)]


# --- sections ------------------------------------------------------------------------------------------------


def _labels(
    infos: Sequence[RunInfo], metrics: Sequence[dict[str, Any]], given: Sequence[str] | None = None
) -> list[str]:
    base = (
        [str(g) for g in given]
        if given is not None
        else [str(m.get("system") or info.name or info.id) for info, m in zip(infos, metrics, strict=True)]
    )
    # Two evals of the same system (say, before and after a fix) must stay apart in legends.
    return [f"{b} #{i + 1}" if base.count(b) > 1 else b for i, b in enumerate(base)]


def _metric_rows(
    infos: Sequence[RunInfo],
    metrics: Sequence[dict[str, Any]],
    preds: Sequence[list[dict[str, Any]] | None],
    seed: int,
) -> list[MetricRow]:
    names: list[str] = []
    for m in metrics:
        names.extend(k for k in m["metrics"] if k not in names)
    rows = []
    for name in names:
        values: list[Estimate | None] = []
        directions: list[bool] = []
        for info, m in zip(infos, metrics, strict=True):
            if name in m["metrics"]:
                est, hib_i = _estimate(info.path / "metrics.json", name, m["metrics"][name])
                values.append(est)
                directions.append(hib_i)
            else:
                values.append(None)
        # The direction is a property of the metric; the first run that reports it decides.
        hib = directions[0] if directions else True
        row = MetricRow(name=name, higher_is_better=hib, values=values)
        row.best = _best([v.value if v else None for v in values], hib)
        if len(infos) >= 2:
            diffs: list[PairedDiff | None] = [None]  # the baseline against itself
            diffs.extend(
                _diff_vs_baseline(infos[0], metrics[i], preds[0], preds[i], name, seed) for i in range(1, len(infos))
            )
            row.diffs = diffs
        rows.append(row)
    return rows


def _diff_vs_baseline(
    base: RunInfo,
    metrics: dict[str, Any],
    base_preds: list[dict[str, Any]] | None,
    preds: list[dict[str, Any]] | None,
    name: str,
    seed: int,
) -> PairedDiff | None:
    # The eval runner may already have paired this run with the baseline: {"paired": {base_id: {metric: {...}}}}.
    paired = metrics.get("paired")
    vs_base = paired.get(base.id) if isinstance(paired, dict) else None
    given = vs_base.get(name) if isinstance(vs_base, dict) else None
    if isinstance(given, dict) and all(_number(given.get(k)) is not None for k in ("diff", "low", "high")):
        return PairedDiff(
            diff=given["diff"], low=given["low"], high=given["high"], p_value=_number(given.get("p_value")),
            n=given.get("n") if isinstance(given.get("n"), int) else None, source="metrics.json",
        )  # fmt: skip
    if not base_preds or not preds:
        return None
    a, b = _shared_scores(base_preds, preds, name)
    # Corpus-level metrics (BLEU) have no per-example scores; then there is nothing to pair.
    return _paired_diff(a, b, seed) if a.size else None


def _category_tables(metrics: Sequence[dict[str, Any]], rows: Sequence[MetricRow]) -> list[CategoryTable]:
    cats: list[dict[str, Any]] = [m["by_category"] if isinstance(m.get("by_category"), dict) else {} for m in metrics]
    if not any(cats):
        return []
    counts: dict[str, int] = {}
    for by in cats:
        for cat, entry in by.items():
            n = _number(entry.get("n")) if isinstance(entry, dict) else None
            counts[cat] = max(counts.get(cat, 0), int(n or 0))
    order = sorted(counts, key=lambda c: (-counts[c], c))
    hib = {r.name: r.higher_is_better for r in rows}
    names = [r.name for r in rows]
    for by in cats:
        for entry in by.values():
            if isinstance(entry, dict):
                names.extend(k for k in entry if k != "n" and k not in names)
    tables = []
    for name in names:
        out_rows = []
        for cat in order:
            values = []
            for by in cats:
                raw = by.get(cat, {}).get(name) if isinstance(by.get(cat), dict) else None
                # A category value may itself carry a CI ({"value", "low", "high"}); the table shows the value.
                values.append(_number(raw.get("value")) if isinstance(raw, dict) else _number(raw))
            if any(v is not None for v in values):
                out_rows.append(
                    CategoryRow(
                        category=cat, n=counts[cat] or None, values=values, best=_best(values, hib.get(name, True))
                    )
                )
        if out_rows:
            tables.append(CategoryTable(metric=name, higher_is_better=hib.get(name, True), rows=out_rows))
    return tables


def _examples(
    preds: Sequence[list[dict[str, Any]] | None], metric: str | None, n_examples: int
) -> ExampleSection | None:
    if metric is None or not preds or preds[0] is None or n_examples <= 0:
        return None
    by_id = [{r["id"]: r for r in p} if p is not None else {} for p in preds]
    rows: list[ExampleRow] = []
    for rec in preds[0]:
        recs = [b.get(rec["id"]) for b in by_id]
        scores = [r["scores"].get(metric) if r else None for r in recs]
        present = [s for s in scores if s is not None]
        if not present:
            continue
        rows.append(
            ExampleRow(
                id=rec["id"], category=rec["category"], input=rec["input"], reference=rec["reference"],
                predictions=[r["prediction"] if r else None for r in recs], scores=scores,
                spread=max(present) - min(present) if len(present) == len(preds) else None,
            )
        )  # fmt: skip
    if len(preds) == 1:
        # sorted() is stable, so ties keep eval-set order and the selection is deterministic.
        chosen = sorted(rows, key=lambda r: r.scores[0])[:n_examples]  # type: ignore[arg-type,return-value]
        return ExampleSection(metric=metric, mode="lowest", rows=chosen)
    differing = [r for r in rows if r.spread]
    # Rounded, so that float noise (0.5 - 0.2 vs 0.6 - 0.3) does not reorder ties; ties keep eval-set order.
    chosen = sorted(differing, key=lambda r: -round(r.spread or 0.0, 9))[:n_examples]
    note = None if chosen else f"the runs score every shared example the same on {metric}"
    return ExampleSection(metric=metric, mode="disagreement", rows=chosen, note=note)


def build_report(
    refs: Sequence[str | Path],
    root: str | Path = "runs",
    *,
    title: str | None = None,
    n_examples: int = 10,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> Report:
    """Read eval runs (ids, prefixes, names, paths or ``latest``) into a ``Report``; the first run is the baseline.

    ``labels`` names the runs in tables and legends (default: each run's system name); the ladder passes rung
    titles. Raises ``RunError`` for an unknown run, ``TailorError`` for a run without ``metrics.json`` or with a
    malformed ``predictions.jsonl`` (naming the file and line).
    """
    if not refs:
        raise TailorError("a report needs at least one run")
    if labels is not None and len(labels) != len(refs):
        raise TailorError(f"{len(labels)} labels for {len(refs)} runs")
    infos = [load_run(r, root) for r in refs]
    metrics = [_read_metrics(i) for i in infos]
    preds = [read_predictions(i.path / "predictions.jsonl") if (i.path / "predictions.jsonl").is_file() else None
             for i in infos]  # fmt: skip
    labels = _labels(infos, metrics, labels)

    warnings = []
    runs = []
    for info, m, label, p in zip(infos, metrics, labels, preds, strict=True):
        raw_versions = info.meta.get("versions")
        versions: dict[str, Any] = raw_versions if isinstance(raw_versions, dict) else {}
        runs.append(
            RunSummary(
                id=info.id, label=label, path=str(info.path), name=info.name, system=_str(m.get("system")),
                task=_str(m.get("task")), kind=info.kind, status=info.status, error=info.error,
                created_at=info.created_at.isoformat() if info.created_at else None,
                n=m.get("n") if isinstance(m.get("n"), int) else (len(p) if p is not None else None),
                seed=m.get("seed") if isinstance(m.get("seed"), int) else info.seed,
                versions={str(k): str(v) for k, v in versions.items()},
            )
        )  # fmt: skip
        if info.status != "complete":
            why = f": {info.error}" if info.error else ""
            warnings.append(f"run {info.id} is {info.status.upper()}{why} — its figures may be partial or missing")
        if p is None:
            warnings.append(f"run {info.id} has no predictions.jsonl: no examples and no paired differences")
    tasks = {r.task for r in runs if r.task}
    if len(tasks) > 1:
        warnings.append(f"the runs evaluated different tasks ({', '.join(sorted(tasks))}): compare with care")

    rows = _metric_rows(infos, metrics, preds, seed)
    primary = metrics[0].get("primary_metric") or next(iter(metrics[0]["metrics"]), None)
    # Worst examples need per-example scores; a corpus-level primary metric (BLEU) has none, so fall back to the
    # first metric the baseline scored per example.
    example_metric = primary
    first = preds[0] or []
    if primary is not None and not any(primary in r["scores"] for r in first):
        example_metric = next((k for r in first for k in r["scores"]), None)
    cost = [
        CostRow(run=r.label, **{k: _number((m.get("cost") or {}).get(k)) for k in COST_FIELDS})
        for r, m in zip(runs, metrics, strict=True)
        if isinstance(m.get("cost"), dict)
    ]
    canaries = [
        CanaryRow(
            run=r.label, **{k: _number(m["canaries"].get(k)) for k in ("before", "after", "drop", "max_drop")},
            promotable=m["canaries"].get("promotable") if isinstance(m["canaries"].get("promotable"), bool) else None,
        )
        for r, m in zip(runs, metrics, strict=True)
        if isinstance(m.get("canaries"), dict)
    ]  # fmt: skip
    for c in canaries:
        if c.promotable is False:
            warnings.append(f"{c.run} is NOT PROMOTABLE: its canary score dropped by more than the task allows")
    if title is None:
        title = (
            f"Evaluation: {runs[0].label}" if len(runs) == 1 else f"Evaluation: {' vs '.join(r.label for r in runs)}"
        )
    return Report(
        title=title,
        created_at=datetime.now().astimezone().isoformat(timespec="seconds"),
        runs=runs,
        warnings=warnings,
        primary_metric=primary,
        metrics=rows,
        categories=_category_tables(metrics, rows),
        cost=cost,
        canaries=canaries,
        examples=_examples(preds, example_metric, n_examples),
        seed=seed,
    )
