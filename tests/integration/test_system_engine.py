"""A System becomes an engine: prompt program, adapters and decoding defaults all apply."""

from pathlib import Path

import pytest
import torch

from tailorlm.core.system import AdapterSpec, PromptSpec, System
from tailorlm.models.build import build_engine
from tailorlm.prompting.program import render_messages

pytestmark = pytest.mark.integration


def _lora(tiny_model_dir: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # init_lora_weights=False: B is random instead of zero, so the adapter visibly changes the logits.
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


def _logits(engine, text: str) -> torch.Tensor:
    ids = engine.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return engine.model(**ids).logits


def test_adapter_system_gives_the_trained_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = _lora(tiny_model_dir, tmp_path / "adapter", seed=1)
    system = System(model=str(tiny_model_dir), adapters=[AdapterSpec(path=str(adapter))], engine="hf")
    loaded_back = System.load(system.save(tmp_path / "sys"))
    engine = build_engine(loaded_back)

    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    ids = engine.tokenizer("hello world", return_tensors="pt")
    with torch.no_grad():
        expected = reference(**ids).logits
    torch.testing.assert_close(_logits(engine, "hello world"), expected)
    base = build_engine(System(model=str(tiny_model_dir), engine="hf"))
    assert not torch.allclose(_logits(base, "hello world"), expected)  # the adapter really is applied


def test_two_adapters_combine(tiny_model_dir: Path, tmp_path: Path) -> None:
    a = _lora(tiny_model_dir, tmp_path / "a", seed=1)
    b = _lora(tiny_model_dir, tmp_path / "b", seed=2)
    engine = build_engine(
        System(model=str(tiny_model_dir), adapters=[AdapterSpec(path=str(a)), AdapterSpec(path=str(b))], engine="hf")
    )
    assert engine.loaded.extra["adapters"] == ["a", "b"]
    assert engine.generate(["hi"])[0].finish_reason in ("stop", "length")


def test_prompt_program_renders_system_fewshot_and_template() -> None:
    prompt = PromptSpec(system="Be brief.", template="Q: {{ input }}\nA:", few_shot=[{"input": "1+1?", "output": "2"}])
    assert render_messages(prompt, "2+2?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q: 1+1?\nA:"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Q: 2+2?\nA:"},
    ]
    assert render_messages(None, "x") == [{"role": "user", "content": "x"}]
