"""Render a ``Report`` as ONE self-contained HTML file: inline CSS, charts as base64 data URIs, no scripts.

The page must open from a mail attachment or an air-gapped machine exactly as it does here, so nothing is
fetched: no fonts, no stylesheets, no JavaScript. Jinja autoescaping is on for everything, because predictions
are model output and may contain ``<script>``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from tailorlm import __version__
from tailorlm.eval.report.build import Report, fmt_diff, fmt_estimate, fmt_num, version_rows
from tailorlm.eval.report.charts import Chart

TEMPLATES = Path(__file__).parent / "templates"
# Inputs longer than this are cut in the table with "…"; the whole text sits in a <details> block below it.
CLIP_CHARS = 400


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # not select_autoescape(): our template ends in .jinja, which it would not escape
        undefined=StrictUndefined,  # a typo in the template fails the test suite instead of rendering blank
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=fmt_num, est=fmt_estimate, diff=fmt_diff)
    return env


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(report: Report, charts: Sequence[Chart] = ()) -> str:
    """The report page as a string; ``charts`` are embedded in it, keyed by file name for the template."""
    template = _environment().get_template("report.html.jinja")
    return template.render(
        r=report,
        charts={c.name: {"title": c.title, "src": data_uri(c.png)} for c in charts},
        extra_charts=[
            {"title": c.title, "src": data_uri(c.png)}
            for c in charts
            if c.name not in ("metrics.png", "categories.png", "cost.png")
        ],
        versions=version_rows(report),
        clip=CLIP_CHARS,
        version=__version__,
    )
