"""What the browser tests share: Debian's Chromium driven by Playwright, skipped with a reason where either is missing.

The system Chromium, not a playwright download: --no-sandbox because CI runs as root, and the rest keep the browser
from reaching the network on its own (updates, field trials), so a request leaving 127.0.0.1 is the page's doing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
NEEDS_BROWSER = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (make browser)"),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="needs the playwright package (pip install playwright)"
    ),
]
