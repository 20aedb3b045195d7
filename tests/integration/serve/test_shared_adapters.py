"""Systems on one base model share its weights, and their LoRA adapters switch per request: each served answer equals
what the trained adapter gives on its own (the hf engine with the adapter applied), also when the requests of three
Systems run in one mixed batch."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
import torch

from serve_harness import make_state, serving
from tailorlm.core.system import AdapterSpec, System
from tailorlm.models.build import build_engine
from tailorlm.models.engines.base import GenerationParams

pytestmark = pytest.mark.integration
PROMPTS = ["hello there", "what is two plus two", "name a colour", "a b c d e f"]


def _lora(base: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    # init_lora_weights=False: B is random, so each adapter visibly changes the answers.
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def test_shared_base_switches_adapters_per_row(tiny_model_dir: Path, tmp_path: Path) -> None:
    gen = {"max_new_tokens": 10}
    systems = [
        System(name="base", model=str(tiny_model_dir), generation=gen),
        System(
            name="a",
            model=str(tiny_model_dir),
            generation=gen,
            adapters=[AdapterSpec(path=str(_lora(tiny_model_dir, tmp_path / "lora-a", 1)))],
        ),
        System(
            name="b",
            model=str(tiny_model_dir),
            generation=gen,
            adapters=[AdapterSpec(path=str(_lora(tiny_model_dir, tmp_path / "lora-b", 2)))],
        ),
    ]
    # What each System answers alone, on the reference engine with its adapter applied the usual way.
    params = GenerationParams(max_new_tokens=10)
    expected = {
        s.name: [c.text for c in build_engine(s.model_copy(update={"engine": "hf"})).generate(PROMPTS, params)]
        for s in systems
    }
    assert expected["a"] != expected["base"] and expected["b"] != expected["a"]

    state = make_state(systems, tmp_path, share_weights="always", batching={"window_ms": 300, "max_batch": 16})
    engines = {id(state.served[s.name].engine) for s in systems}
    assert len(engines) == 1, "the three Systems should share one copy of the base"
    assert state.served["a"].adapter == "a" and state.served["base"].adapter is None

    got: dict[tuple[str, int], str] = {}
    with serving(state) as base:

        def ask(name: str, i: int) -> None:
            r = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": name, "messages": [{"role": "user", "content": PROMPTS[i]}], "max_tokens": 10},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            got[(name, i)] = r.json()["choices"][0]["message"]["content"]

        # All twelve requests arrive inside one batching window: one mixed batch, an adapter per row.
        threads = [threading.Thread(target=ask, args=(s.name, i)) for s in systems for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for s in systems:
        assert [got[(s.name, i)] for i in range(len(PROMPTS))] == expected[s.name], s.name


def test_auto_keeps_merged_fast_engines_for_a_small_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    systems = [
        System(name="base", model=str(tiny_model_dir)),
        System(
            name="a",
            model=str(tiny_model_dir),
            adapters=[AdapterSpec(path=str(_lora(tiny_model_dir, tmp_path / "lora-a", 1)))],
        ),
    ]
    state = make_state(systems, tmp_path)
    assert state.served["base"].engine_name == "ct2" and state.served["a"].engine_name == "ct2"
    assert state.served["base"].engine is not state.served["a"].engine
