"""PPO's clipped policy and value losses and the masked whitening, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tailorlm.train.align.rl_math import masked_mean, masked_whiten, ppo_policy_loss, ppo_value_loss

pytestmark = pytest.mark.unit


def rows(*values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_masked_mean_ignores_masked_positions_and_an_empty_mask() -> None:
    values, mask = rows([1.0, 2.0, 100.0], [3.0, 100.0, 100.0]), rows([1, 1, 0], [1, 0, 0])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_masked_whiten_by_hand() -> None:
    values, mask = rows([1.0, 3.0, 50.0], [5.0, 50.0, 50.0]), rows([1, 1, 0], [1, 0, 0])
    # Masked entries 1, 3, 5: mean 3, unbiased variance (4 + 0 + 4) / 2 = 4, std 2.
    out = masked_whiten(values, mask, eps=0.0)
    assert out.flatten().tolist() == pytest.approx([-1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    kept = masked_whiten(values, mask, shift_mean=False, eps=0.0)
    assert kept.flatten().tolist() == pytest.approx([2.0, 3.0, 0.0, 4.0, 0.0, 0.0])


def test_policy_loss_clips_only_the_side_that_would_overshoot() -> None:
    old = rows([0.0, 0.0, 0.0, 0.0])
    # Ratios e^x: 1.5 (above 1 + ε), 0.5 (below 1 − ε), 1.1 (inside), 1.5 with a negative advantage.
    new = torch.log(rows([1.5, 0.5, 1.1, 1.5]))
    adv = rows([1.0, 1.0, 2.0, -1.0])
    mask = rows([1, 1, 1, 1])
    loss, clipfrac = ppo_policy_loss(new, old, adv, mask, clip=0.2)
    # Token 1: max(−1.5, −1.2) = −1.2 (clipped). Token 2: max(−0.5, −0.8) = −0.5 (unclipped: a worse ratio is not
    # clipped for a positive advantage). Token 3: −2.2. Token 4: max(1.5, 1.2) = 1.5 (unclipped, pessimistic).
    assert loss.item() == pytest.approx((-1.2 - 0.5 - 2.2 + 1.5) / 4)
    assert clipfrac.item() == pytest.approx(1 / 4)


def test_policy_loss_is_the_policy_gradient_at_ratio_one() -> None:
    logp = torch.log(rows([0.3, 0.6])).requires_grad_(True)
    adv, mask = rows([2.0, -1.0]), rows([1, 1])
    loss, _ = ppo_policy_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    # d/dlogp of −Â·e^(logp − old) at logp = old is −Â, averaged over 2 tokens.
    assert logp.grad is not None and logp.grad.flatten().tolist() == pytest.approx([-1.0, 0.5])


def test_value_loss_by_hand() -> None:
    old = rows([0.0, 0.0])
    values = rows([1.0, 0.1])
    returns = rows([2.0, 1.0])
    mask = rows([1, 1])
    loss, clipfrac = ppo_value_loss(values, old, returns, mask, clip=0.2)
    # Token 1: V 1.0 → clipped to 0.2: max((1 − 2)², (0.2 − 2)²) = 3.24. Token 2: inside the clip: (0.1 − 1)² = 0.81.
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.81) / 2)
    assert clipfrac.item() == pytest.approx(0.5)
    assert math.isfinite(loss.item())
