"""PNG charts of a ``Report``, drawn with matplotlib's Agg backend (no display, no GUI toolkit).

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas rather than through pyplot: no global
backend switch (a notebook that imports us keeps its inline backend), no display needed, and no figure registry
that would keep every chart alive in a long-lived process such as the ladder.

Each chart function takes the report and returns a ``Chart`` (or None when the report has nothing to draw). A
later producer (the ladder's quality-vs-cost Pareto chart) passes its own functions to ``render_charts``.
Figures are about 900 px wide at 100 dpi with 10-11 pt text, so they read at 100% zoom in the HTML page.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tailorlm.eval.report.build import TOP_CATEGORIES, Report

DPI = 100
# Colour-blind-safe (Okabe-Ito), one colour per run, in run order, so a run keeps its colour on every chart.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True)
class Chart:
    """One rendered chart: ``name`` is its file name (``metrics.png``), ``png`` its bytes."""

    name: str
    title: str
    png: bytes


ChartFn = Callable[[Report], Chart | None]


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _figure(nrows: int, ncols: int, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself to the figure
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def metrics_chart(report: Report) -> Chart | None:
    """One panel per metric (metrics have different scales), one bar per run, CI as error bars."""
    rows = [r for r in report.metrics if any(v is not None for v in r.values)][:12]
    if not rows:
        return None
    cols = min(3, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = _figure(nrows, cols, (3.2 * cols + 0.6, 2.9 * nrows + 0.4))
    labels = [r.label for r in report.runs]
    for ax, row in zip(axes.flat, rows, strict=False):
        x = np.arange(len(labels))
        vals = [v.value if v else np.nan for v in row.values]
        # Asymmetric error bars: distance from the value down to `low` and up to `high` (0 when no CI).
        err = np.array(
            [
                [v.value - v.low if v and v.low is not None else 0.0 for v in row.values],
                [v.high - v.value if v and v.high is not None else 0.0 for v in row.values],
            ]
        ).clip(min=0)
        ax.bar(x, vals, color=[_colour(i) for i in range(len(labels))], yerr=err, capsize=4, ecolor="#333333")
        ax.set_title(f"{row.name} ({'higher' if row.higher_is_better else 'lower'} is better)", fontsize=10)
        ax.set_xticks(x, labels, rotation=20 if len(labels) > 2 else 0, ha="right" if len(labels) > 2 else "center")
        ax.set_ylabel(row.name)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    fig.suptitle("Metrics per run (error bars: 95% CI)", fontsize=12)
    fig.tight_layout()
    return Chart("metrics.png", "Metrics per run with 95% confidence intervals", _png(fig))


def categories_chart(report: Report) -> Chart | None:
    """Horizontal grouped bars of the primary metric per category (category names are long), top 15 by count."""
    table = next((t for t in report.categories if t.metric == report.primary_metric), None)
    table = table or (report.categories[0] if report.categories else None)
    if table is None:
        return None
    rows = table.rows[:TOP_CATEGORIES][::-1]  # largest category at the top
    n_runs = len(report.runs)
    height = 0.8 / n_runs
    fig, axes = _figure(1, 1, (9, max(2.5, 0.22 * len(rows) * n_runs + 1.2)))
    ax = axes[0, 0]
    y = np.arange(len(rows))
    for i, run in enumerate(report.runs):
        vals = [r.values[i] if r.values[i] is not None else np.nan for r in rows]
        # Run 0 on top within each group, matching the legend order.
        ax.barh(y + (n_runs - 1 - i - (n_runs - 1) / 2) * height, vals, height, label=run.label, color=_colour(i))
    ax.set_yticks(y, [f"{r.category[:40]} (n={r.n})" if r.n else r.category[:40] for r in rows])
    ax.set_xlabel(table.metric)
    ax.set_title(f"{table.metric} per category (top {len(rows)} by example count)", fontsize=12)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if n_runs > 1:
        ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    return Chart("categories.png", f"{table.metric} per category", _png(fig))


_COST_PANELS = (
    ("wall_s", "wall time (s)"),
    ("tokens_per_s", "tokens / s"),
    ("latency_p50_s", "p50 latency (s)"),
    ("peak_rss_mb", "peak memory (MB)"),
)


def cost_chart(report: Report) -> Chart | None:
    """Four panels: wall time, throughput, median latency and peak memory, one bar per run."""
    if not report.cost:
        return None
    panels = [(k, t) for k, t in _COST_PANELS if any(getattr(c, k) is not None for c in report.cost)]
    if not panels:
        return None
    cols = min(2, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = _figure(nrows, cols, (4.0 * cols + 0.4, 2.6 * nrows + 0.4))
    colours = {r.label: _colour(i) for i, r in enumerate(report.runs)}
    labels = [c.run for c in report.cost]
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        vals = [getattr(c, key) if getattr(c, key) is not None else np.nan for c in report.cost]
        x = np.arange(len(labels))
        ax.bar(x, vals, color=[colours.get(lbl, "#777777") for lbl in labels])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(title)
        ax.set_xticks(x, labels, rotation=20 if len(labels) > 2 else 0, ha="right" if len(labels) > 2 else "center")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Cost per run", fontsize=12)
    fig.tight_layout()
    return Chart("cost.png", "Cost per run", _png(fig))


DEFAULT_CHARTS: tuple[ChartFn, ...] = (metrics_chart, categories_chart, cost_chart)


def render_charts(report: Report, extra: Sequence[ChartFn] = ()) -> list[Chart]:
    """Every default chart the report has data for, then ``extra`` ones, in order."""
    charts = [fn(report) for fn in (*DEFAULT_CHARTS, *extra)]
    return [c for c in charts if c is not None]
