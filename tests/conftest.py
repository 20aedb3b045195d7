"""Shared fixtures. Models are tiny and random, built from a config in the test session: nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Belt and braces: no test may reach a hub, even by accident.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama-architecture model with a ChatML tokenizer, saved as a HF folder."""
    from tailorlm.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only CI and developer machines have ../shared)")
    return SHARED_DATA


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The crash-consistency harness's table of kill points and outcomes (tests/killharness.py), when it ran."""
    import sys

    harness = sys.modules.get("killharness")
    if harness is not None and harness.LEDGER:
        terminalreporter.write_sep("-", "crash consistency: kill points and outcomes")
        terminalreporter.write_line(harness.summary())
