"""The vllm engine on a GPU: the same System answers as the hf engine does (greedy), with its LoRA adapter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tailorlm.core.system import System
from tailorlm.errors import ConfigError
from tailorlm.models.build import build_engine
from tailorlm.models.engines.base import GenerationParams

pytestmark = pytest.mark.integration


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not _has_cuda(), reason="needs vLLM and a CUDA GPU")
def test_vllm_answers_as_hf_greedy() -> None:
    questions = ["What is the capital of France?", "Name three primary colors."]
    params = GenerationParams(max_new_tokens=16, stop=["\n"])
    fast = build_engine(System(engine="vllm"))
    ref = build_engine(System(engine="hf"), device="cpu")
    assert [c.text for c in fast.generate(questions, params)] == [c.text for c in ref.generate(questions, params)]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_missing_says_what_to_install(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="needs vLLM") as err:
        build_engine(System(model=str(tiny_model_dir), engine="vllm"))
    assert "tailorlm[vllm]" in str(err.value.hint)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not _has_cuda(), reason="needs vLLM and a CUDA GPU")
def test_tailor_serve_runs_a_vllm_system(tmp_path: Path) -> None:
    import httpx

    from serve_harness import make_state, serving

    system = System(name="gpu", engine="vllm", generation={"max_new_tokens": 16})
    ref = build_engine(System(engine="hf"), device="cpu")
    expected = ref.generate(["What is the capital of France?"], GenerationParams(max_new_tokens=16))[0].text
    with serving(make_state([system], tmp_path)) as base:
        body = {"model": "gpu", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected
