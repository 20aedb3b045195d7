"""The ct2 engine: the same answers as the hf engine, adapters merged and cached by content, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tailorlm.core.system import AdapterSpec, System
from tailorlm.errors import ConfigError, DiskFullError
from tailorlm.models.build import build_engine
from tailorlm.models.engines.base import GenerationParams
from tailorlm.models.engines.select import resolve_engine

pytestmark = pytest.mark.integration

PROMPTS = ["hello there", "what is two plus two", "a b c d e f g", "tell me a story about a cat"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path_factory.getbasetemp() / "ct2-cache"))
    monkeypatch.delenv("TAILOR_ENGINE", raising=False)


def _lora(tiny_model_dir: Path, out: Path, seed: int, kind: str = "lora") -> Path:
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if kind == "prompt":
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    else:  # init_lora_weights=False: B is random, so the adapter visibly changes the answers
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


def _answers(engine, params: GenerationParams) -> list[tuple[str, str, int]]:
    return [(c.text, c.finish_reason, c.usage.completion_tokens) for c in engine.generate(PROMPTS, params)]


def test_auto_takes_ct2_for_a_local_causal_lm_and_answers_as_hf(tiny_model_dir: Path) -> None:
    system = System(model=str(tiny_model_dir))
    assert resolve_engine(system).name == "ct2"
    fast, ref = build_engine(system), build_engine(system.model_copy(update={"engine": "hf"}))
    assert type(fast).__name__ == "CT2Engine" and type(ref).__name__ == "HFEngine"
    greedy = GenerationParams(max_new_tokens=12)
    assert _answers(fast, greedy) == _answers(ref, greedy)
    # Log-probabilities of the same tokens agree to float tolerance.
    lp = GenerationParams(max_new_tokens=6, logprobs=True)
    a, b = fast.generate(PROMPTS[:1], lp)[0], ref.generate(PROMPTS[:1], lp)[0]
    assert a.text == b.text and a.logprobs is not None and b.logprobs is not None
    assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-3)


def test_the_default_model_gives_the_same_answers_with_stop_strings() -> None:
    # A random tiny model only repeats tokens; the default model answers like the eval sets ask.
    questions = [
        "What is the capital of France?",
        "Name three primary colors.",
        "Who wrote Romeo and Juliet? Answer with a short phrase.",
        "Write a haiku about the sea.",
        "Context: The Amazon is the largest rainforest on Earth, spanning nine countries.\n\nQuestion: How many"
        " countries does the Amazon span?",
    ]
    fast, ref = build_engine(System()), build_engine(System(engine="hf"))
    for params in (GenerationParams(max_new_tokens=24, stop=["\n"]), GenerationParams(max_new_tokens=24)):
        got, want = fast.generate(questions, params), ref.generate(questions, params)
        assert [(c.text, c.finish_reason) for c in got] == [(c.text, c.finish_reason) for c in want]
        # The hf engine counts one pad (the EOS id) after a row that a stop string ended in a batch; ct2 does not.
        assert all(
            0 <= w.usage.completion_tokens - g.usage.completion_tokens <= 1 for g, w in zip(got, want, strict=True)
        )


def test_stream_gives_the_generated_text(tiny_model_dir: Path) -> None:
    engine = build_engine(System(model=str(tiny_model_dir)))
    params = GenerationParams(max_new_tokens=10)
    chunks = list(engine.stream(PROMPTS[1], params))
    assert "".join(c.text for c in chunks) == engine.generate(PROMPTS[1:2], params)[0].text
    assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].usage is not None


def test_adapters_are_merged_converted_once_and_keyed_by_content(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = _lora(tiny_model_dir, tmp_path / "adapter", seed=1)
    system = System(model=str(tiny_model_dir), adapters=[AdapterSpec(path=str(adapter))])
    greedy = GenerationParams(max_new_tokens=10)
    fast = build_engine(system)
    assert fast.settings["convert_s"] > 0
    assert _answers(fast, greedy) == _answers(build_engine(system.model_copy(update={"engine": "hf"})), greedy)
    assert _answers(fast, greedy) != _answers(build_engine(System(model=str(tiny_model_dir))), greedy)
    assert build_engine(system).settings["convert_s"] == 0  # cached
    # Retrained in place: same path, new content, converted again.
    _lora(tiny_model_dir, adapter, seed=2)
    assert build_engine(system).settings["convert_s"] > 0


def test_a_failed_conversion_leaves_no_folder_that_looks_complete(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctranslate2

    from tailorlm.models.engines.ct2_convert import converted_model, is_converted

    def explode(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ctranslate2.converters.TransformersConverter, "convert", explode)
    with pytest.raises(DiskFullError, match="disk full"):
        converted_model(str(tiny_model_dir), [], "float32", tmp_path / "cache")
    folders = list((tmp_path / "cache" / "ct2").iterdir())
    assert not any(is_converted(f) for f in folders)
    assert not [f for f in folders if not f.name.startswith(".")]  # only lock files and nothing under a real name


def test_engine_ct2_refuses_what_it_cannot_run_before_any_work(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompt_adapter = _lora(tiny_model_dir, tmp_path / "prompt", seed=0, kind="prompt")
    with_prompt = System(model=str(tiny_model_dir), engine="ct2", adapters=[AdapterSpec(path=str(prompt_adapter))])
    with pytest.raises(ConfigError, match="PROMPT_TUNING, which does not merge") as err:
        build_engine(with_prompt)
    assert "engine: hf" in str(err.value.hint)
    # auto falls back to hf for the same System, and says why.
    choice = resolve_engine(with_prompt.model_copy(update={"engine": "auto"}))
    assert choice.name == "hf" and "PROMPT_TUNING" in choice.reason


def test_unsupported_architecture_and_missing_package_are_named(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (odd / "config.json").write_text(
        json.dumps({**config, "model_type": "mamba", "architectures": ["MambaForCausalLM"]})
    )
    with pytest.raises(ConfigError, match=r"cannot convert MambaForCausalLM"):
        resolve_engine(System(model=str(odd), engine="ct2"))
    assert resolve_engine(System(model=str(odd))).name == "hf"

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ctranslate2" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install ctranslate2"):
        resolve_engine(System(model=str(tiny_model_dir), engine="ct2"))


def test_env_override_and_fixed_engines(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = System(model=str(tiny_model_dir))
    monkeypatch.setenv("TAILOR_ENGINE", "hf")
    assert resolve_engine(system).name == "hf"
    monkeypatch.setenv("TAILOR_ENGINE", "fast")
    with pytest.raises(ConfigError, match="TAILOR_ENGINE='fast' is not an engine"):
        resolve_engine(system)
    monkeypatch.delenv("TAILOR_ENGINE")
    assert resolve_engine(system.model_copy(update={"engine": "hf"})).name == "hf"
    assert resolve_engine(System(model="gpt-x", engine="openai")).name == "openai"


def test_concurrent_requests_from_threads_get_their_own_answers(tiny_model_dir: Path) -> None:
    # The server (and a ladder's judge) call one engine from several threads; CTranslate2 serializes them safely.
    from concurrent.futures import ThreadPoolExecutor

    engine = build_engine(System(model=str(tiny_model_dir)))
    params = GenerationParams(max_new_tokens=8)
    expected = [engine.generate([p], params)[0].text for p in PROMPTS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda p: engine.generate([p], params)[0].text, PROMPTS * 3))
    assert got == expected * 3


def test_stop_strings_match_only_generated_text_in_both_engines(tiny_model_dir: Path) -> None:
    # The chat prompt ends in "\n" and the tiny model answers "\n\n…": a stop of "\n\n" must need both newlines
    # from the answer (transformers' own stop_strings also matched across the prompt's end, after one "\n").
    system = System(model=str(tiny_model_dir))
    params = GenerationParams(max_new_tokens=12, stop=["\n\n"])
    for engine in (build_engine(system), build_engine(system.model_copy(update={"engine": "hf"}))):
        assert [
            (c.text, c.finish_reason, c.usage.completion_tokens) for c in engine.generate(PROMPTS[:2], params)
        ] == [("", "stop", 2)] * 2
        assert "".join(c.text for c in engine.stream(PROMPTS[0], params)) == ""
