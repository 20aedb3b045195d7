"""Merged-adapter rollouts: the merged model computes what the unmerged one does, and the weights come back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tailorlm.train.align.rollouts import can_merge, merged_adapter

pytestmark = pytest.mark.integration  # builds a tiny model


def test_merging_changes_no_output_and_restores_the_weights(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # a trained adapter: B = 0 would make merging a no-op
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with merged_adapter(model):
            merged = model(input_ids=ids).logits
        again = model(input_ids=ids).logits
    # The round trip W + Δ − Δ may move a weight by an ulp: equal to rounding, not bit for bit.
    assert torch.allclose(merged, unmerged, atol=1e-5) and torch.allclose(again, unmerged, atol=1e-6)
    assert all(torch.allclose(p, weights[n], atol=1e-7) for n, p in model.named_parameters() if n in weights)
    assert can_merge(model) and not can_merge(base.get_base_model() if hasattr(base, "get_base_model") else object())


def test_a_model_without_an_adapter_is_left_alone() -> None:
    module = torch.nn.Linear(2, 2)
    with merged_adapter(module):
        pass
    assert not can_merge(module)
