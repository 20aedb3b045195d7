"""Render a ``Report`` as a markdown summary (``summary.md``) for PR descriptions, chat and terminals.

Charts are linked as relative files (``![…](metrics.png)``) that sit beside the summary. Every cell is escaped:
``|`` would break the table, newlines would end the row, and ``<``/``>``/``&`` are HTML-escaped because markdown
viewers render inline HTML (a ``<script>`` in a prediction must stay text).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from tailorlm.eval.report.build import Report, Table, fmt_diff, fmt_estimate, fmt_num, version_rows
from tailorlm.eval.report.charts import Chart

COST_HEADER = (
    "run",
    "wall time (s)",
    "prompt tokens",
    "completion tokens",
    "tokens/s",
    "p50 latency (s)",
    "peak RSS (MB)",
)
CELL_CHARS = 120  # example text in a table cell; the full text is in report.html


def cell(text: str, limit: int | None = None) -> str:
    """One table cell: clipped to ``limit`` characters with "…", single-line, escaped."""
    if limit is not None and len(text) > limit:
        text = text[:limit].rstrip() + "…"
    text = html.escape(text, quote=False).replace("|", "\\|")
    return " ".join(text.split()) or " "


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    # Cells arrive preformatted; only escaping is left (cell() leaves "**" emphasis alone).
    lines += ["| " + " | ".join(rows_cell for rows_cell in row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(report: Report, charts: Sequence[Chart] = ()) -> str:
    r = report
    out = [f"# {cell(r.title)}", "", f"Generated {r.created_at}.", ""]
    for w in r.warnings:
        out.append(f"> **⚠ {cell(w)}**")
    if r.warnings:
        out.append("")

    out += _sections([s for s in r.sections if s.lead])
    out += ["## Runs", ""]
    out += _table(
        ["#", "label", "run id", "system", "task", "status", "n"],
        [
            [
                str(i + 1) + (" (baseline)" if i == 0 and len(r.runs) > 1 else ""),
                cell(run.label), f"`{cell(run.id)}`", cell(run.system or "—"), cell(run.task or "—"),
                cell(run.status) if run.complete else f"**{cell(run.status.upper())}**",
                str(run.n) if run.n is not None else "—",
            ]
            for i, run in enumerate(r.runs)
        ],
    )  # fmt: skip

    labels = [cell(run.label) for run in r.runs]
    versions = version_rows(r)
    if versions:
        out += ["Library versions (from run.json):", ""]
        out += _table(["package", *labels], [[f"`{cell(p)}`", *(cell(v) for v in vs)] for p, vs in versions])
    out += ["## Metrics", "", "Value [95% CI]; **bold** = best run.", ""]
    out += _table(
        ["metric", *labels],
        [
            [cell(m.name)]
            + [f"**{fmt_estimate(v)}**" if i in m.best else fmt_estimate(v) for i, v in enumerate(m.values)]
            for m in r.metrics
        ],
    )
    if len(r.runs) > 1:
        out += [f"### Difference vs baseline ({labels[0]})", "", "Paired bootstrap, 95% CI.", ""]
        out += _table(
            ["metric", *[f"{lbl} − {labels[0]}" for lbl in labels[1:]]],
            [[cell(m.name)] + [fmt_diff(d) for d in m.diffs[1:]] for m in r.metrics],
        )

    for c in charts:
        out += [f"![{cell(c.title)}]({c.name})", ""]

    primary = next(
        (t for t in r.categories if t.metric == r.primary_metric), r.categories[0] if r.categories else None
    )
    if primary is not None:
        out += [f"## {cell(primary.metric)} by category", ""]
        out += _table(
            ["category", "n", *labels],
            [
                [cell(row.category), str(row.n) if row.n is not None else "—"]
                + [f"**{fmt_num(v)}**" if i in row.best else fmt_num(v) for i, v in enumerate(row.values)]
                for row in primary.rows
            ],
        )

    if r.cost:
        out += ["## Cost", ""]
        out += _table(
            COST_HEADER,
            [
                [cell(c.run), fmt_num(c.wall_s, 1), fmt_num(c.prompt_tokens, 0), fmt_num(c.completion_tokens, 0),
                 fmt_num(c.tokens_per_s, 1), fmt_num(c.latency_p50_s, 3), fmt_num(c.peak_rss_mb, 0)]
                for c in r.cost
            ],
        )  # fmt: skip

    if r.canaries:
        out += ["## Forgetting canaries", ""]
        flag = {True: "yes", False: "**✗ NOT PROMOTABLE**", None: "—"}
        out += _table(
            ["run", "before", "after", "drop", "max drop", "promotable"],
            [
                [cell(c.run), fmt_num(c.before), fmt_num(c.after), fmt_num(c.drop), fmt_num(c.max_drop),
                 flag[c.promotable]]
                for c in r.canaries
            ],
        )  # fmt: skip

    if r.examples is not None:
        ex = r.examples
        heading = "Lowest-scoring examples" if ex.mode == "lowest" else "Examples where the runs differ most"
        out += [f"## {heading} on {cell(ex.metric)}", ""]
        if ex.note:
            out += [cell(ex.note), ""]
        if ex.rows:
            out += _table(
                ["id", "input", "reference", *[f"{lbl} ({cell(ex.metric)})" for lbl in labels]],
                [
                    [f"`{cell(row.id)}`", cell(row.input, CELL_CHARS), cell(" | ".join(row.reference), CELL_CHARS)]
                    + [
                        "—" if p is None else f"{cell(p, CELL_CHARS)} ({fmt_num(s)})"
                        for p, s in zip(row.predictions, row.scores, strict=True)
                    ]
                    for row in ex.rows
                ],
            )
        out += ["Full texts: report.html.", ""]

    out += _sections([s for s in r.sections if not s.lead])
    return "\n".join(out).rstrip() + "\n"


def _sections(sections: Sequence[Table]) -> list[str]:
    out: list[str] = []
    for s in sections:
        out += [f"## {cell(s.title)}", ""]
        if s.note:
            out += [cell(s.note), ""]
        out += _table(s.columns, [[cell(c) for c in row] for row in s.rows])
    return out
