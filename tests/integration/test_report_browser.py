"""The HTML report opens in headless Chromium without errors, and every chart actually decodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser_harness import CHROMIUM, CHROMIUM_ARGS, NEEDS_BROWSER
from tailorlm.eval.report import build_report, write_report
from unit.eval.test_report_build import example_records, make_eval_run  # tests/ is on sys.path

pytestmark = [pytest.mark.integration, *NEEDS_BROWSER]


def test_report_opens_in_headless_chromium_without_errors(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    root = tmp_path / "runs"
    base = make_eval_run(root, "base", example_records(tuned=False))
    tuned = make_eval_run(
        root,
        "tuned",
        example_records(tuned=True),
        canaries={"before": 0.41, "after": 0.30, "drop": 0.11, "max_drop": 0.05, "promotable": False},
    )
    files = write_report(build_report([base, tuned], root, title="Browser check"), tmp_path / "report")

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
            )
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            # Anything but the file itself and its data: URIs would be a resource the report depends on.
            page.on("request", lambda req: requests.append(req.url))
            page.goto(files.html.resolve().as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            title = page.title()
            # The <script> prediction must be text on the page, not something that ran.
            assert page.locator("text=<script>alert('x')</script>").count() >= 1
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()

    assert errors == []
    assert title == "Browser check"
    assert len(widths) == 3 and all(w > 0 for w in widths), widths
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
