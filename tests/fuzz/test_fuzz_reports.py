"""Fuzz the report builders with hostile strings: HTML injection into the page, terminal escapes in Rich tables.

Inputs, predictions, references, categories, run labels, rung titles and rung errors all come from users or
models. The properties: the HTML report shows each of them escaped (no payload survives as markup), and the
terminal tables print them with control and bidi characters as visible escapes and Rich markup inert.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from fuzz.fuzz_helpers import HOSTILE, budget, counted
from tailorlm.cli.report import _headline
from tailorlm.core.safe_text import printable, safe_cell
from tailorlm.eval.report.build import build_report
from tailorlm.eval.report.html import render_html
from tailorlm.eval.report.markdown import render_markdown
from tailorlm.ladder.recommend import recommend
from tailorlm.ladder.report import build_ladder_report, rung_table
from unit.eval.test_report_build import example_records, make_eval_run  # tests/ is on sys.path
from unit.ladder.test_recommend import typical_ladder

pytestmark = pytest.mark.unit

# Payloads that must never reach the page as markup, and characters that must never reach a terminal raw.
HTML_PAYLOADS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<svg onload=alert(1)>")
RAW_TERMINAL = ("\x1b", "\x00", "\u202e", "\u2066", "\r", "\x07", "\x9b")
hostile = st.lists(st.sampled_from(HOSTILE) | st.text(max_size=20), min_size=1, max_size=3).map("".join)


def _render(renderable: object) -> str:
    # No colour and no terminal: any ESC in the output came from the data, not from Rich's styling.
    console = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _assert_safe_html(html: str) -> None:
    for payload in HTML_PAYLOADS:
        assert payload not in html, f"unescaped {payload!r} in the HTML report"
    assert "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")


def _assert_safe_terminal(text: str) -> None:
    for char in RAW_TERMINAL:
        assert char not in text, f"raw {char!r} reached the terminal"


@settings(max_examples=budget(12))
@given(values=st.lists(hostile, min_size=6, max_size=6))
@counted("report: eval report HTML + tables with hostile strings")
def test_eval_report(values: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="fuzz-report-"))
    base, tuned = example_records(False), example_records(True)
    for records in (base, tuned):
        for i, r in enumerate(records[:4]):
            r["input"], r["prediction"], r["reference"] = values[i % 6], values[(i + 1) % 6], [values[(i + 2) % 6]]
            r["category"] = values[3] or "c"
    ids = [make_eval_run(root, "base", base, task=values[4]), make_eval_run(root, "tuned", tuned, task=values[4])]
    report = build_report([str(root / i) for i in ids], title=values[5], labels=[values[0], values[1]])
    _assert_safe_html(render_html(report))
    render_markdown(report)  # must not raise
    _assert_safe_terminal(_render(_headline(report)))


@settings(max_examples=budget(12))
@given(title=hostile, error=hostile, task=hostile)
@counted("report: ladder report HTML + rung table with hostile strings")
def test_ladder_report(title: str, error: str, task: str) -> None:
    results = typical_ladder(Path(tempfile.mkdtemp(prefix="fuzz-ladder-")))
    results[0] = results[0].model_copy(update={"title": title})
    results[5] = results[5].model_copy(update={"title": task, "error": error})
    rec = recommend(results, primary="f1")
    report = build_ladder_report(results, rec, task_name=task, primary="f1")
    _assert_safe_html(render_html(report))
    _assert_safe_terminal(_render(rung_table(results, primary="f1", recommendation=rec)))


@settings(max_examples=budget(100))
@given(text=st.text() | hostile)
@counted("report: safe_cell")
def test_safe_cell(text: str) -> None:
    cell = safe_cell(text)
    _assert_safe_terminal(_render(cell))
    assert "\n" not in printable(text)
    if text.isprintable() and "[" not in text and "\\" not in text:
        assert cell == text  # ordinary text is left alone
