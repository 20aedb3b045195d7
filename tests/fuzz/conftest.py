"""Hypothesis profiles for the fuzz tests, and the per-boundary case count printed at the end of the session.

``TAILOR_FUZZ_PROFILE=ci`` (the default) keeps the whole folder under a minute on 2 cores; ``long`` tries ten
times as many examples (see ``fuzz_helpers.budget``). ``TAILOR_FUZZ_COUNTS=path.json`` says where the counts go;
by default they go to ``fuzz-counts.json`` in pytest's base temp folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from fuzz.fuzz_helpers import CASES, PROFILE, UNCAUGHT

# No deadline: the shared 2-core machines make per-example timings noisy. Derandomized in CI, so that a red
# run is reproducible from the log; the long profile explores new examples every time.
_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "database": None,
}
settings.register_profile("ci", derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("long", derandomize=False, print_blob=True, **_COMMON)
settings.load_profile(PROFILE if PROFILE in ("ci", "long") else "ci")


@pytest.fixture(autouse=True, scope="session")
def _fuzz_temp_inside_basetemp(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The fuzz tests make a ``tempfile.mkdtemp`` folder per example (thousands a run). Inside pytest's base temp
    folder they go away with it, as pytest prunes old runs; in /tmp they piled up by the thousand."""
    import tempfile

    old = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("fuzz-temp"))
    yield
    tempfile.tempdir = old


def _counts_path(config: pytest.Config) -> Path:
    if explicit := os.environ.get("TAILOR_FUZZ_COUNTS"):
        return Path(explicit)
    factory = getattr(config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory is not None else Path.cwd()
    return Path(base) / "fuzz-counts.json"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not CASES:
        return
    rows = {b: {"cases": CASES[b], "uncaught": UNCAUGHT[b]} for b in sorted(CASES)}
    terminalreporter.section(f"fuzz cases per boundary (profile {PROFILE})")
    width = max(len(b) for b in rows)
    for boundary, row in rows.items():
        terminalreporter.write_line(f"{boundary:<{width}}  {row['cases']:>6} cases, {row['uncaught']} uncaught")
    total = sum(r["cases"] for r in rows.values())
    terminalreporter.write_line(f"{'total':<{width}}  {total:>6} cases, {sum(UNCAUGHT.values())} uncaught")
    path = _counts_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"profile": PROFILE, "boundaries": rows}, indent=2) + "\n", encoding="utf-8")
    terminalreporter.write_line(f"counts written to {path}")
