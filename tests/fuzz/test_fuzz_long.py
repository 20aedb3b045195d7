"""The long fuzz run: the whole fuzz folder again with ``TAILOR_FUZZ_PROFILE=long`` (ten times the examples).

Marked ``slow``: it takes several minutes on 2 cores. Run it with ``pytest tests/fuzz/test_fuzz_long.py -m slow``
(or run the folder directly with the environment variable, see docs/robustness.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


def test_long_profile_has_no_uncaught_exception(tmp_path: Path) -> None:
    counts = tmp_path / "fuzz-counts.json"
    env = {**os.environ, "TAILOR_FUZZ_PROFILE": "long", "TAILOR_FUZZ_COUNTS": str(counts)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE), "-m", "unit or integration"]
    proc = subprocess.run(cmd, env=env, cwd=HERE.parents[1], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    data = json.loads(counts.read_text(encoding="utf-8"))
    assert data["profile"] == "long"
    assert all(row["uncaught"] == 0 for row in data["boundaries"].values()), data
