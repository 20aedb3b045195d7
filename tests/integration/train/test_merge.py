"""`tailor merge`: the merged model's logits equal the adapter model's; unmergeable adapters are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.system import AdapterSpec, System

pytestmark = pytest.mark.integration


def _adapter(tiny_model_dir: Path, out: Path, config: object) -> Path:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)  # type: ignore[arg-type]
    model.save_pretrained(out)
    return out


def _logits(model: object, tokenizer: object) -> torch.Tensor:
    ids = tokenizer("The merged model must agree", return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        return model(**ids).logits  # type: ignore[operator]


def _mergeable_config(method: str) -> object:
    import peft

    # Non-default init everywhere: a freshly initialized adapter is a no-op (LoRA's B = 0) and would prove nothing.
    if method == "lora":
        return peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    if method == "loha":
        return peft.LoHaConfig(r=4, alpha=8, target_modules="all-linear", init_weights=False)
    if method == "lokr":
        return peft.LoKrConfig(r=4, alpha=8, target_modules="all-linear", init_weights=False)
    if method == "oft":
        return peft.OFTConfig(oft_block_size=8, r=0, target_modules="all-linear", init_weights=False)
    return peft.VeraConfig(r=8, target_modules="all-linear", init_weights=False)


@pytest.mark.parametrize("method", ["lora", "loha", "lokr", "oft", "vera"])
def test_merged_logits_match_the_adapter_model(tiny_model_dir: Path, tmp_path: Path, method: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = _adapter(tiny_model_dir, tmp_path / "adapter", _mergeable_config(method))
    system = System(name="sft", model=str(tiny_model_dir), adapters=[AdapterSpec(path=str(adapter))])
    system.save(tmp_path / "sys")

    result = CliRunner().invoke(app, ["merge", str(tmp_path / "sys"), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = System.load(tmp_path / "merged")
    assert merged.adapters == [] and merged.name == "sft-merged"
    assert not (Path(merged.model) / "adapter_config.json").exists()

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with_adapter = PeftModel.from_pretrained(base, adapter).eval()
    folded = AutoModelForCausalLM.from_pretrained(merged.model).eval()
    expected, got = _logits(with_adapter, tok), _logits(folded, tok)
    assert torch.allclose(expected, got, atol=1e-4)
    assert not torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok), got, atol=1e-4)


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_prompt_tuning_cannot_be_merged(tiny_model_dir: Path, tmp_path: Path, method: str) -> None:
    from peft import PromptEncoderConfig, PromptTuningConfig

    kind = PromptTuningConfig if method == "prompt_tuning" else PromptEncoderConfig
    adapter = _adapter(tiny_model_dir, tmp_path / "pt", kind(task_type="CAUSAL_LM", num_virtual_tokens=4))
    System(model=str(tiny_model_dir), adapters=[AdapterSpec(path=str(adapter))]).save(tmp_path / "sys")
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "sys"), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "cannot merge" in result.output
    assert not (tmp_path / "out" / "model").exists()
