"""The `hf` engine on a tiny random model: batching, stops, limits, sampling seeds, streaming, usage."""

from pathlib import Path

import pytest

from tailorlm.models.engines.base import Engine, GenerationParams, Request
from tailorlm.models.engines.hf import HFEngine
from tailorlm.models.load import load_model

pytestmark = pytest.mark.integration

PROMPTS = ["hello", "The capital of France is", "a much longer question about foxes and dogs and numbers 42?"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> HFEngine:
    return HFEngine(load_model(str(tiny_model_dir)), batch_size=2)


def test_satisfies_engine_protocol(engine: HFEngine) -> None:
    assert isinstance(engine, Engine)


def test_render_uses_the_models_chat_template(engine: HFEngine) -> None:
    text = engine.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert engine.render(Request(prompt="raw")) == "raw"


def test_batched_equals_one_at_a_time(engine: HFEngine) -> None:
    params = GenerationParams(max_new_tokens=12)
    batched = engine.generate(PROMPTS, params)  # left-padded batches of 2, sorted by length
    single = [engine.generate([p], params)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.usage for c in batched] == [c.usage for c in single]


def test_usage_and_length_limit(engine: HFEngine) -> None:
    out = engine.generate(PROMPTS, GenerationParams(max_new_tokens=5))
    for prompt, c in zip(PROMPTS, out, strict=True):
        assert c.usage.prompt_tokens == len(engine._encode(engine.render(prompt)))
        assert c.usage.completion_tokens <= 5
        assert c.finish_reason == ("length" if c.usage.completion_tokens == 5 else "stop")


def test_stop_strings_cut_the_text(engine: HFEngine) -> None:
    free = engine.generate(["hello"], GenerationParams(max_new_tokens=20))[0].text
    if len(free.strip()) < 4:
        pytest.skip("the random model produced too little text to pick a stop string")
    stop = free.strip()[2:4]
    cut = engine.generate(["hello"], GenerationParams(max_new_tokens=20, stop=[stop]))[0]
    assert stop not in cut.text
    assert free.startswith(cut.text)
    assert cut.finish_reason == "stop"


def test_sampling_is_reproducible_with_a_seed(engine: HFEngine) -> None:
    params = GenerationParams(max_new_tokens=10, temperature=1.0, seed=123)
    assert engine.generate(["hello"], params)[0].text == engine.generate(["hello"], params)[0].text


def test_logprobs_per_generated_token(engine: HFEngine) -> None:
    c = engine.generate(["hello"], GenerationParams(max_new_tokens=6, logprobs=True))[0]
    assert c.logprobs is not None and len(c.logprobs) == c.usage.completion_tokens
    assert all(lp <= 0 for lp in c.logprobs)


def test_stream_matches_generate(engine: HFEngine) -> None:
    params = GenerationParams(max_new_tokens=12)
    chunks = list(engine.stream("hello", params))
    full = engine.generate(["hello"], params)[0]
    assert "".join(ch.text for ch in chunks) == full.text
    assert chunks[-1].finish_reason == full.finish_reason
    assert chunks[-1].usage == full.usage


def test_progress_callback_counts_every_request(engine: HFEngine) -> None:
    seen: list[int] = []
    engine.generate(PROMPTS, GenerationParams(max_new_tokens=2), on_progress=seen.append)
    assert sum(seen) == len(PROMPTS)


def test_corrupt_model_folder_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from tailorlm.errors import ModelNotFoundError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 100)  # a download or copy cut short
    with pytest.raises(ModelNotFoundError, match="incomplete or corrupt"):
        load_model(str(broken))
