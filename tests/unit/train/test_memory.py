"""The memory plan: micro-batch and checkpointing chosen from the estimate, the effective batch kept."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig

from tailorlm.errors import ConfigError
from tailorlm.train.memory import activation_mb_per_token, estimate_mb, plan_memory

pytestmark = pytest.mark.unit

# The default model's shape (SmolLM2-135M): 30 layers, hidden 576, intermediate 1536.
SMOL = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9)
N = 134_515_008


def plan(**kw):  # type: ignore[no-untyped-def]
    args = dict(n_params=N, trainable=0, batch_size=4, grad_accum=1, longest=600, on_cpu=True)
    return plan_memory(SMOL, **(args | kw))


def test_per_token_activations_match_the_measured_default_model() -> None:
    # Measured: 4 rows of 600 tokens 9.7-10.0 GB, 1 row 3.3 GB → about 2.1 GB per 600-token row.
    per_row = activation_mb_per_token(SMOL, checkpointing=False) * 600 / 1024
    assert 1.9 <= per_row <= 2.4
    four = estimate_mb(SMOL, N, 0, 4, 600, checkpointing=False) / 1024
    one = estimate_mb(SMOL, N, 0, 1, 600, checkpointing=False) / 1024
    assert 9.0 <= four <= 11.0 and 3.0 <= one <= 4.2
    # Checkpointing keeps one hidden vector per layer (plus one layer's worth): a small fraction.
    assert activation_mb_per_token(SMOL, checkpointing=True) < 0.2 * activation_mb_per_token(SMOL, checkpointing=False)


def test_long_rows_on_a_cpu_go_two_at_a_time_keeping_the_effective_batch() -> None:
    p = plan(budget_mb=64_000)  # 2 rows of 600 tokens hold enough tokens per pass to keep a CPU busy
    assert (p.micro_batch, p.grad_accum, p.checkpointing) == (2, 2, False)
    assert "effective batch 4" in p.reason and "CPU" in p.reason
    assert p.estimate_mb < 7 * 1024


def test_a_laptop_budget_takes_one_row_per_pass() -> None:
    p = plan(budget_mb=5 * 1024)
    assert (p.micro_batch, p.grad_accum, p.checkpointing) == (1, 4, False)
    assert p.estimate_mb < 4.5 * 1024 and "would need" in p.reason


def test_short_rows_keep_the_whole_batch_per_pass() -> None:
    p = plan(longest=250, budget_mb=64_000)
    assert (p.micro_batch, p.grad_accum) == (4, 1)
    assert p.reason.endswith("budget")  # nothing to explain


def test_on_a_gpu_the_batch_shrinks_only_for_the_budget() -> None:
    roomy = plan(on_cpu=False, budget_mb=64_000)
    assert (roomy.micro_batch, roomy.checkpointing) == (4, False)
    tight = plan(on_cpu=False, budget_mb=6_000)
    assert tight.micro_batch == 2 and tight.grad_accum == 2 and not tight.checkpointing
    assert "would need" in tight.reason


def test_checkpointing_only_when_one_row_does_not_fit() -> None:
    p = plan(budget_mb=2_500)
    assert (p.micro_batch, p.grad_accum, p.checkpointing) == (1, 4, True)
    assert "checkpointing on" in p.reason


def test_what_the_user_set_is_kept() -> None:
    p = plan(budget_mb=2_500, checkpointing=False, micro_batch=2)
    assert (p.micro_batch, p.grad_accum, p.checkpointing) == (2, 2, False)
    assert "exceeds the budget" in p.reason
    with pytest.raises(ConfigError, match="must divide"):
        plan(micro_batch=3)


def test_grad_accum_multiplies() -> None:
    p = plan(grad_accum=2, budget_mb=64_000)
    assert (p.micro_batch, p.grad_accum) == (2, 4) and "effective batch 8" in p.reason


def test_what_the_process_holds_already_counts() -> None:
    assert plan(budget_mb=6 * 1024).micro_batch == 2
    # A ladder holding its index and embedder leaves less room: one row per pass then.
    held = plan(budget_mb=6 * 1024, resident_mb=2_500)
    assert held.micro_batch == 1 and held.estimate_mb > 2_500


def test_full_fine_tuning_counts_gradients_and_adam_state() -> None:
    lora = estimate_mb(SMOL, N, 0, 1, 600, checkpointing=False)
    full = estimate_mb(SMOL, N, N, 1, 600, checkpointing=False)
    assert full - lora == pytest.approx(N * 12 / 2**20)
