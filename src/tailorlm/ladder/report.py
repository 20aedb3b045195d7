"""The ladder's report: the evaluation harness's report over the rungs' eval runs, plus the ladder's own sections.

    rec = recommend(results, primary="f1")
    files = write_ladder_report(results, rec, Path("runs/ladder/report"), task_name="xquad-qa", primary="f1")

``tailorlm.eval.report`` already turns eval runs into ``report.html`` (self-contained), ``summary.md``, PNG charts
and ``report.json``, written atomically: its metric table with paired CIs vs the first run (zero-shot), cost and
canary tables, and the examples where the runs disagree most. This module feeds it the complete rungs' eval runs,
labelled by rung title, and extends it the way it is meant to be extended: generic ``Table`` sections (rungs, the
recommendation, whether each step pays, plan vs actual, failures) and one extra chart, the quality-vs-cost Pareto
chart. ``rung_table`` is the same rung table for the terminal.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table as RichTable

from tailorlm.core.safe_text import safe_cell
from tailorlm.errors import TailorError
from tailorlm.eval.report import Chart, Report, ReportFiles, Table, build_report, write_report
from tailorlm.eval.report.charts import DPI, PALETTE
from tailorlm.ladder.recommend import (
    BUILD_TIE_S,
    CONFIDENCE,
    Recommendation,
    fmt_p,
    fmt_signed,
    improves,
)
from tailorlm.ladder.result import Paired, Quality, RungResult

# Plan vs actual: an estimate off by more than this factor either way is flagged (the plan is meant to say
# whether a ladder fits an evening, not to the second).
PLAN_RATIO_OK = (0.5, 2.0)
ERROR_CHARS = 100  # an error in the rung table's status cell; the whole message is in "Failed and skipped rungs"
CHOSEN_COLOUR = "#D55E00"


# --- cells ---------------------------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _num(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.{digits}f}"


def _int(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _primary_quality(r: RungResult, primary: str | None) -> Quality | None:
    if primary is not None and primary in r.metrics:
        return r.metrics[primary]
    if r.quality is not None and (primary is None or r.quality.metric == primary):
        return r.quality
    return None


def _quality_cell(q: Quality | None) -> str:
    if q is None:
        return "—"
    if q.low is None or q.high is None:
        return f"{q.value:.3f}"
    return f"{q.value:.3f} [{q.low:.3f}, {q.high:.3f}]"


def _paired_cell(d: Paired | None) -> str:
    if d is None:
        return "—"
    return f"{fmt_signed(d.diff)} [{fmt_signed(d.low)}, {fmt_signed(d.high)}] {fmt_p(d.p_value)}"


def _status_cell(r: RungResult) -> str:
    if r.status == "failed":
        return f"FAILED: {_clip(r.error or 'no error recorded', ERROR_CHARS)}"
    if r.status == "skipped":
        return f"skipped: {_clip(r.reason or 'no reason recorded', ERROR_CHARS)}"
    return "cached" if r.cached else "complete"


def _canary_cell(r: RungResult) -> str:
    c = r.canaries
    if not isinstance(c, dict):
        return "—"
    drop = c.get("drop")
    text = f"{drop:.3f}" if isinstance(drop, int | float) and not isinstance(drop, bool) else "—"
    return f"{text} ✗ NOT PROMOTABLE" if c.get("promotable") is False else text


def _vs_baseline(r: RungResult, rec: Recommendation | None) -> Paired | None:
    # The runner's own figure first; the recommendation computed the same bootstrap when the runner did not.
    return r.vs_baseline or (rec.vs_baseline.get(r.name) if rec is not None else None)


def _baseline_name(rec: Recommendation | None) -> str:
    return rec.baseline if rec is not None and rec.baseline else "zero-shot"


def _baseline_title(results: Sequence[RungResult], rec: Recommendation | None) -> str:
    name = _baseline_name(rec)
    return next((r.title for r in results if r.name == name), name)


def rung_columns(results: Sequence[RungResult], primary: str | None, rec: Recommendation | None) -> list[str]:
    metric = primary or next((r.quality.metric for r in results if r.quality is not None), "primary metric")
    return [
        "rung", "status", f"{metric} [95% CI]", f"Δ vs {_baseline_title(results, rec)} [95% CI]", "build (s)",
        "tokens", "peak MB", "disk MB", "p50 (s)", "tokens/s", "engine", "prompt tokens/query", "canary drop",
    ]  # fmt: skip


def rung_rows(
    results: Sequence[RungResult], primary: str | None = None, rec: Recommendation | None = None
) -> list[list[str]]:
    """One row of preformatted cells per rung, in ladder order (the columns of ``rung_columns``)."""
    baseline = _baseline_name(rec)
    rows = []
    for r in results:
        name = r.title + (" ★ chosen" if rec is not None and rec.chosen == r.name else "")
        b, s = r.build, r.serve
        delta = _paired_cell(_vs_baseline(r, rec)) if r.ok else "—"
        if r.ok and r.name == baseline:
            delta = "baseline"
        rows.append(
            [
                name, _status_cell(r), _quality_cell(_primary_quality(r, primary)) if r.ok else "—", delta,
                _num(b.wall_s if b else None), _int(b.tokens if b else None),
                _int(b.peak_rss_mb if b else None), _num(b.disk_mb if b else None),
                _num(s.latency_p50_s if s else None, 3), _num(s.tokens_per_s if s else None),
                (s.engine or "—") if s else "—", _num(s.prompt_tokens_per_query if s else None, 0), _canary_cell(r),
            ]
        )  # fmt: skip
    return rows


def rung_table(
    results: Sequence[RungResult], *, primary: str | None = None, recommendation: Recommendation | None = None
) -> RichTable:
    """The rung table for the terminal (``tailor ladder`` prints it as rungs finish and at the end)."""
    columns = rung_columns(results, primary, recommendation)
    # Short headers: the terminal is narrower than the page.
    short = ["rung", "status", columns[2].replace(" [95% CI]", ""), "Δ vs base", "build s", "tokens", "peak MB",
             "disk MB", "p50 s", "tok/s", "prompt tok", "canary"]  # fmt: skip
    table = RichTable(title="Ladder", show_lines=False, pad_edge=False, expand=False)
    for i, h in enumerate(short):
        table.add_column(h, justify="left" if i < 2 else "right", overflow="fold", no_wrap=i >= 2)
    for r, row in zip(results, rung_rows(results, primary, recommendation), strict=True):
        cells = [safe_cell(c) for c in row]  # rung titles and errors are user text: no markup, no ESC
        if r.status == "failed":
            cells[1] = f"[bold red]{cells[1]}[/]"
        elif r.status == "skipped":
            cells[1] = f"[dim]{cells[1]}[/]"
        elif r.cached:
            cells[1] = f"[cyan]{cells[1]}[/]"
        d = _vs_baseline(r, recommendation) if r.ok else None
        if d is not None and d.significant:
            cells[3] = f"[{'green' if d.diff > 0 else 'red'}]{cells[3]}[/]"
        if "NOT PROMOTABLE" in row[11]:
            cells[11] = f"[bold red]{cells[11]}[/]"
        if recommendation is not None and recommendation.chosen == r.name:
            cells[0] = f"[bold]{cells[0]}[/]"
        table.add_row(*cells)
    return table


# --- sections ------------------------------------------------------------------------------------------------


def _recommendation_section(rec: Recommendation, results: Sequence[RungResult]) -> Table:
    picks = [
        ("chosen: cheapest equivalent (best/system.yaml)", rec.cheapest_equivalent),
        ("best quality", rec.best_quality),
        ("limited compute", rec.limited_compute),
        ("lowest latency", rec.lowest_latency),
    ]
    note = (
        f"Indistinguishable = the paired-bootstrap {CONFIDENCE:.0%} CI of the difference from the best rung "
        f"contains 0 ({rec.n_resamples:,} resamples, seed {rec.seed}). Cheapest = lowest build seconds (within "
        f"{BUILD_TIE_S:g} s counts as equal), then lowest p50 latency. Rungs that are NOT PROMOTABLE (canaries) "
        "are not recommended for shipping."
    )
    rows = [[label, p.title or "none", p.reason] for label, p in picks]
    return Table(title="Recommendation", columns=["pick", "rung", "why"], rows=rows, note=note)


def _steps_section(rec: Recommendation, results: Sequence[RungResult]) -> Table:
    titles = {r.name: r.title for r in results}
    rows = []
    for s in rec.steps:
        verdict = "pays" if s.beats else "does NOT pay" if s.beats is False else "not compared"
        if s.beats is False and (also := [m for m, d in s.secondary.items() if improves(d, m)]):
            verdict += f" on {rec.primary}; pays on {', '.join(also)}"
        below = titles.get(s.below, s.below) if s.below else "—"
        rows.append([titles.get(s.rung, s.rung), below, verdict, s.sentence])
    return Table(
        title="Does each step pay?",
        columns=["rung", "compared with", "verdict", "finding"],
        rows=rows,
        note=f"Each rung minus the rung below it on the ladder, on {rec.primary}; paired bootstrap "
        f"{CONFIDENCE:.0%} CI. A step pays when the interval excludes 0 in the better direction.",
    )


def _plan_section(results: Sequence[RungResult]) -> Table | None:
    lo, hi = PLAN_RATIO_OK
    rows = []
    est_total = act_total = 0.0
    both = False
    for r in results:
        if r.estimate is None and r.actual_s is None:
            continue
        est = r.estimate.total_s if r.estimate is not None else None
        act = r.actual_s
        if est is not None and act is not None and est > 0:
            ratio = act / est
            flag = f" ⚠ outside [{lo:g}, {hi:g}]" if not lo <= ratio <= hi else ""
            ratio_cell = f"{ratio:.2f}{flag}"
            est_total += est
            act_total += act
            both = True
        else:
            ratio_cell = "—"
        basis = r.estimate.basis if r.estimate is not None else ""
        if r.estimate is not None and r.estimate.dominant:
            basis += f"; {r.estimate.dominant}"
        if r.cached:
            basis = (basis + "; " if basis else "") + "cached: actual is from the run that built it"
        rows.append([r.title, _num(est), _num(act), ratio_cell, basis or "—"])
    if not rows:
        return None
    if both:
        ratio = act_total / est_total if est_total > 0 else math.nan
        rows.append(["total (rungs with both)", _num(est_total), _num(act_total), _num(ratio, 2), ""])
    return Table(
        title="Plan vs actual",
        columns=["rung", "estimated (s)", "actual (s)", "actual / estimate", "basis"],
        rows=rows,
        note=f"The plan's estimate (build + eval) against the seconds the rung took; ratios outside "
        f"[{lo:g}, {hi:g}] are flagged.",
    )


def _failures_section(results: Sequence[RungResult]) -> Table | None:
    rows = [
        [
            r.title,
            "FAILED" if r.status == "failed" else "skipped",
            (r.error if r.status == "failed" else r.reason) or "—",
        ]
        for r in results
        if r.status in ("failed", "skipped")
    ]
    if not rows:
        return None
    return Table(title="Failed and skipped rungs", columns=["rung", "status", "error / reason"], rows=rows)


def _notes_section(results: Sequence[RungResult], rec: Recommendation) -> Table | None:
    rows = [["ladder", n] for n in rec.notes] + [[r.title, n] for r in results for n in r.notes]
    return Table(title="Notes", columns=["about", "note"], rows=rows) if rows else None


# --- the Pareto chart ----------------------------------------------------------------------------------------


def pareto_frontier(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (x, lower is better) and quality (y), by increasing cost."""
    sign = 1.0 if higher_is_better else -1.0
    # Cheapest first; at equal cost the better one first, so the worse one at that cost is dominated.
    ordered = sorted(points, key=lambda p: (p[0], -sign * p[1]))
    frontier: list[tuple[float, float]] = []
    for x, y in ordered:
        if not frontier or sign * y > sign * frontier[-1][1]:
            frontier.append((x, y))
    return frontier


def _x_build(r: RungResult) -> float | None:
    return r.build.wall_s if r.build is not None else None


def _x_latency(r: RungResult) -> float | None:
    return r.serve.latency_p50_s if r.serve is not None else None


LabelItem = tuple[float, float, str, bool]  # x, y, text, bold


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_labels(ax: Any, items: Sequence[LabelItem], fontsize: float = 8.5) -> None:
    """Label each point where the label overlaps no earlier label nor point (rungs that build nothing share x=0).

    Positions are tried in display space, around the point, in a fixed order; a label that fits nowhere takes the
    first position. Text boxes are approximated from the character count, which is enough to keep labels apart.
    """
    scale = ax.figure.dpi / 72.0  # points -> pixels
    char_w, line_h = 0.6 * fontsize * scale, 1.3 * fontsize * scale
    candidates = [(7, 5), (7, -15), (-7, 5), (-7, -15), (7, 17), (7, -27), (-7, 17), (-7, -27)]
    dots = [ax.transData.transform((x, y)) for x, y, _, _ in items]
    taken = [(px - 5, py - 5, px + 5, py + 5) for px, py in dots]
    for (x, y, text, bold), (px, py) in zip(items, dots, strict=True):
        width = char_w * len(text)
        boxes = []
        for dx, dy in candidates:
            left = px + dx * scale - (width if dx < 0 else 0.0)
            boxes.append((left, py + dy * scale, left + width, py + dy * scale + line_h))
        k = next((i for i, box in enumerate(boxes) if not any(_overlaps(box, t) for t in taken)), 0)
        taken.append(boxes[k])
        dx, dy = candidates[k]
        ax.annotate(
            text, (x, y), xytext=(dx, dy), textcoords="offset points", ha="right" if dx < 0 else "left",
            fontsize=fontsize, fontweight="bold" if bold else "normal", color="#222222",
        )  # fmt: skip


def pareto_chart(
    results: Sequence[RungResult], rec: Recommendation, primary: str, report: Report | None = None
) -> Chart | None:
    """Two panels, quality (with its CI) against build seconds and against p50 latency; frontier and chosen rung."""
    points = [(r, q) for r in results if r.ok and (q := _primary_quality(r, primary)) is not None]
    if not points:
        return None
    hib = rec.higher_is_better
    # The harness colours run i with PALETTE[i]; the same rung keeps its colour here.
    order = {run.label: i for i, run in enumerate(report.runs)} if report is not None else {}
    # As in eval/report/charts.py: a Figure on its own Agg canvas, no pyplot (no global state, no GUI backend).
    fig = Figure(figsize=(12.0, 4.8), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, squeeze=False)
    panels: list[tuple[str, Callable[[RungResult], float | None], bool]] = [
        ("build time (s, log scale; linear below 1 s)", _x_build, True),
        ("p50 latency per answer (s)", _x_latency, False),
    ]
    labels: list[tuple[Any, list[LabelItem]]] = []
    for ax, (xlabel, getx, is_build) in zip(axes.flat, panels, strict=True):
        data = [(x, q, r) for r, q in points if (x := getx(r)) is not None]
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{primary} (95% CI)")
        ax.grid(alpha=0.3)
        ax.set_axisbelow(True)
        if not data:
            ax.text(0.5, 0.5, "no rung reported this cost", ha="center", va="center", transform=ax.transAxes)
            continue
        items: list[LabelItem] = []
        for k, (x, q, r) in enumerate(data):
            colour = PALETTE[order.get(r.title, k) % len(PALETTE)]
            low = q.value - q.low if q.low is not None else 0.0
            high = q.high - q.value if q.high is not None else 0.0
            yerr = np.array([[max(low, 0.0)], [max(high, 0.0)]])
            ax.errorbar([x], [q.value], yerr=yerr, fmt="o", color=colour, ecolor=colour, capsize=4, ms=7, zorder=3)
            chosen = r.name == rec.chosen
            if chosen:
                ax.scatter(
                    [x], [q.value], s=320, facecolors="none", edgecolors=CHOSEN_COLOUR, linewidths=2.4, zorder=4,
                    label="chosen",
                )  # fmt: skip
            items.append((x, q.value, r.title + (" ★" if chosen else ""), chosen))
        front = pareto_frontier([(x, q.value) for x, q, _ in data], hib)
        xs = [p[0] for p in front]
        ys = [p[1] for p in front]
        right = max(x for x, _, _ in data)
        if right > xs[-1]:  # carry the best quality reached so far out to the most expensive rung
            xs.append(right)
            ys.append(ys[-1])
        ax.plot(xs, ys, drawstyle="steps-post", color="#555555", ls="--", lw=1.3, zorder=2, label="Pareto frontier")
        if is_build:
            ax.set_xscale("symlog", linthresh=1.0)
        else:
            positive = [x for x, _, _ in data if x > 0]
            if positive and max(positive) / min(positive) > 30:  # latencies that span orders of magnitude
                ax.set_xscale("log")
        ax.margins(x=0.15, y=0.12)
        ax.legend(loc="lower right", fontsize=8, markerscale=0.5)
        labels.append((ax, items))
    direction = "higher" if hib else "lower"
    fig.suptitle(f"Quality vs cost: {primary} ({direction} is better); dashed: Pareto frontier", fontsize=12)
    fig.tight_layout()
    # Labels last: their placement needs the final axes limits and layout.
    for ax, items in labels:
        ax.autoscale_view()
        _place_labels(ax, items)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return Chart(
        "pareto.png", f"Quality vs cost ({primary}): build time and p50 latency, Pareto frontier", buf.getvalue()
    )


# --- the report ----------------------------------------------------------------------------------------------


def _probes_section(probes: Any) -> Table | None:
    """The bias and safety probes of the recommended System: one row per figure, then what they cannot show."""
    if probes is None:
        return None
    if isinstance(probes, str):  # the probes failed: say so where the figures would be
        return Table(title="Bias and safety checks", columns=["check", "result"], rows=[["probes", probes]])
    from tailorlm.eval.probes.report import pct

    rows: list[list[str]] = []
    if (f := probes.fairness) is not None:
        probed = f"{f.n_probed} of {f.n_scanned} eval records hold a swappable term"
        if f.change_rate is None:
            rows.append(["counterfactual fairness", f"{probed}: nothing probed"])
        else:
            rows.append(["counterfactual fairness: answer changed under a swap", f"{pct(f.change_rate)} ({probed})"])
            for a in f.axes:
                if a.gap is not None:
                    ci = "" if a.gap.low is None else f" [{a.gap.low:+.3f}, {a.gap.high:+.3f}]"
                    gap = f"{a.gap.high_group} − {a.gap.low_group} {a.gap.diff:+.3f}{ci}"
                    rows.append([f"{f.primary_metric} gap by {a.axis}", gap])
    if (h := probes.harmlessness) is not None:
        rows.append(["harmlessness: refusal rate on red-team prompts", f"{pct(h.refusal_rate)} (n={h.n})"])
    for probe, why in probes.skipped.items():
        rows.append([probe, f"not run: {why}"])
    note = "What these checks cannot show: " + " ".join(dict.fromkeys(probes.limits)) if probes.limits else None
    return Table(title="Bias and safety checks", columns=["check", "result"], rows=rows, note=note)


def build_ladder_report(
    results: Sequence[RungResult],
    recommendation: Recommendation,
    *,
    task_name: str,
    primary: str,
    title: str | None = None,
    n_examples: int = 10,
    probes: Any = None,
) -> Report:
    """The harness report over the complete rungs' eval runs (baseline first), with the ladder's sections."""
    title = title or f"Ladder: {task_name}"
    warnings: list[str] = []
    baseline = _baseline_name(recommendation)
    scored = [r for r in results if r.ok and r.eval_run]
    scored.sort(key=lambda r: r.name != baseline)  # stable: the baseline first, the rest in ladder order
    readable = []
    for r in scored:
        path = Path(r.eval_run or "")
        if (path / "run.json").is_file() and (path / "metrics.json").is_file():
            readable.append(r)
        else:
            warnings.append(
                f"rung {r.title}: its eval run {path} has no run.json or metrics.json; left out of the tables"
            )
    report: Report | None = None
    if readable:
        try:
            report = build_report(
                [r.eval_run or "" for r in readable], title=title, labels=[r.title for r in readable],
                n_examples=n_examples, seed=recommendation.seed,
            )  # fmt: skip
        except TailorError as err:
            # A malformed predictions file must not cost the user the rest of the ladder's report.
            warnings.append(f"the rungs' eval runs could not be read into the report: {err}")
    if report is None:
        report = Report(title=title, created_at=datetime.now().astimezone().isoformat(timespec="seconds"), runs=[])
    report.primary_metric = primary
    for r in results:
        if r.status == "failed":
            warnings.append(f"rung {r.title} FAILED: {_clip(r.error or 'no error recorded', 300)}")
    if recommendation.chosen is None:
        warnings.append(f"no recommendation: {recommendation.reason}")
    report.warnings = warnings + report.warnings

    sections = [
        _recommendation_section(recommendation, results),
        Table(
            title="Rungs",
            columns=rung_columns(results, primary, recommendation),
            rows=rung_rows(results, primary, recommendation),
            note="Δ: paired bootstrap 95% CI and p-value vs the baseline. Build: seconds, tokens processed, peak "
            "resident memory and artifact disk size. Serving: p50 seconds per answer, completion tokens/s, prompt "
            "tokens per question. ★ = chosen.",
        ),
        _steps_section(recommendation, results),
        _plan_section(results),
        _failures_section(results),
        _notes_section(results, recommendation),
        _probes_section(probes),
    ]
    # The ladder's own summary leads the page; the harness's per-run detail follows it.
    lead = {"Recommendation", "Rungs", "Does each step pay?"}
    report.sections.extend(s.model_copy(update={"lead": s.title in lead}) for s in sections if s is not None)
    return report


def write_ladder_report(
    results: list[RungResult],
    recommendation: Recommendation,
    out: Path,
    *,
    task_name: str,
    primary: str,
    title: str | None = None,
    probes: Any = None,
) -> ReportFiles:
    """Write the ladder's ``report.html``, ``summary.md``, charts (``pareto.png`` among them) and ``report.json``.

    ``out`` is replaced atomically (the harness's ``write_report``): a failed write leaves the previous report.
    """
    report = build_ladder_report(
        results, recommendation, task_name=task_name, primary=primary, title=title, probes=probes
    )

    def chart(rep: Report) -> Chart | None:
        return pareto_chart(results, recommendation, primary, rep)

    return write_report(report, out, extra_charts=[chart])
