"""The plain LM head gives TRL's fused head's outputs and gradients, on labelled positions and zeros elsewhere."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tailorlm.train.align.cpu_head import cpu_lm_head, plain_lm_head

pytestmark = pytest.mark.unit

FIELDS = ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs")


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # right padding
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :5] = -100  # the prompt is not scored
    return ids, mask, labels


def test_plain_head_matches_trl_fused_head(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    theirs = copy.deepcopy(ours)
    plain_lm_head(ours, outputs=FIELDS)
    add_fused_lm_head(theirs, outputs=FIELDS)
    ids, mask, labels = _batch(ours.config.vocab_size)
    a = ours(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    b = theirs(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        assert torch.allclose(x.float(), y.float(), atol=1e-5), name
    assert torch.equal(a.label_mask, b.label_mask)
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    a.log_probs.sum().backward()
    b.log_probs.sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    # Without fused_lm_head the model's own forward runs (generation is unchanged).
    plain = ours(input_ids=ids, attention_mask=mask)
    assert plain.logits.shape == (*ids.shape, ours.config.vocab_size)


def test_cpu_lm_head_swaps_trl_function_only_inside_the_block() -> None:
    import trl.trainer.dpo_trainer as dpo

    before = dpo.add_fused_lm_head
    with cpu_lm_head(enabled=True):
        assert dpo.add_fused_lm_head is not before
    assert dpo.add_fused_lm_head is before
    with cpu_lm_head(enabled=False):
        assert dpo.add_fused_lm_head is before
