"""KL estimators, PPO's per-token rewards, GRPO/RLOO advantages, GAE and KL control against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tailorlm.train.align.rl_math import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    grpo_advantages,
    kl_estimate,
    kl_penalized_rewards,
    rloo_advantages,
    sequence_kl,
)

pytestmark = pytest.mark.unit


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def rows(*values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_kl_estimators_by_hand() -> None:
    # π(token) = 1/2, π_ref(token) = 1/4: log ratio log 2, r = π_ref/π = 1/2.
    logp, ref = t(math.log(0.5)), t(math.log(0.25))
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2.0))
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2.0) ** 2)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx((0.5 - 1.0) - math.log(0.5))
    # The other way round k1 is negative while k3 stays positive: r = 2, (2 − 1) − log 2.
    assert kl_estimate(ref, logp, "k1").item() == pytest.approx(-math.log(2.0))
    assert kl_estimate(ref, logp, "k3").item() == pytest.approx(1.0 - math.log(2.0))
    with pytest.raises(ValueError, match="estimator"):
        kl_estimate(logp, ref, "k4")  # type: ignore[arg-type]


def test_k3_and_k2_are_never_negative_and_all_vanish_at_equality() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = -torch.rand(64, 16, generator=gen, dtype=torch.float64) * 5
    ref = -torch.rand(64, 16, generator=gen, dtype=torch.float64) * 5
    assert bool((kl_estimate(logp, ref, "k3") >= 0).all())
    assert bool((kl_estimate(logp, ref, "k2") >= 0).all())
    assert bool((kl_estimate(logp, ref, "k1") < 0).any())
    for estimator in ("k1", "k2", "k3"):
        assert kl_estimate(logp, logp, estimator).abs().max().item() == 0.0  # type: ignore[arg-type]


def test_sequence_kl_sums_over_the_answer_tokens_only() -> None:
    logp = rows([-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0])
    ref = rows([-1.5, -1.2, -9.0], [-2.0, -1.0, -3.0])
    mask = rows([1.0, 1.0, 0.0], [0.0, 1.0, 1.0])
    assert sequence_kl(logp, ref, mask).tolist() == pytest.approx([0.5 + 0.2, -1.0 + 1.0])
    k3 = [
        (math.exp(-0.5) - 1 + 0.5) + (math.exp(-0.2) - 1 + 0.2),
        (math.exp(1.0) - 1 - 1.0) + (math.exp(-1.0) - 1 + 1.0),
    ]
    assert sequence_kl(logp, ref, mask, "k3").tolist() == pytest.approx(k3)


def test_kl_penalized_rewards_put_the_score_on_the_last_answer_token() -> None:
    logp = rows([-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0])
    ref = rows([-5.0, -1.1, -1.3, -7.0], [-1.2, -0.9, -1.0, -1.4])  # k1 per token: [4, .1, .3, 6], [.2, −.1, 0, .4]
    mask = rows([0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0])  # prompt, answer, answer, pad / four answer tokens
    rewards = kl_penalized_rewards(t(1.0, 2.0), logp, ref, mask, kl_coef=0.5)
    assert rewards[0].tolist() == pytest.approx([0.0, -0.05, -0.15 + 1.0, 0.0])
    assert rewards[1].tolist() == pytest.approx([-0.1, 0.05, 0.0, -0.2 + 2.0])
    # Summed, the rewards are score − β·KL(sequence): the KL-regularised objective.
    expected = t(1.0, 2.0) - 0.5 * sequence_kl(logp, ref, mask)
    assert rewards.sum(dim=1).tolist() == pytest.approx(expected.tolist())


def test_kl_penalized_rewards_refuse_a_row_without_answer_tokens() -> None:
    with pytest.raises(ValueError, match="at least one answer token"):
        zeros = rows([0.0, 0.0], [0.0, 0.0])
        kl_penalized_rewards(t(1.0, 1.0), zeros, zeros, rows([1.0, 0.0], [0.0, 0.0]), kl_coef=0.1)


def test_grpo_advantages_by_hand_for_each_scale() -> None:
    rewards = t(1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0)  # two prompts, G = 4; the second group is constant
    group_std = math.sqrt(4 * 0.25 / 3)  # unbiased: Σ(r − 0.5)² / (G − 1)
    a = 0.5 / (group_std + 1e-4)
    assert grpo_advantages(rewards, 4).tolist() == pytest.approx([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0])
    # Batch std: mean 1.25, squared deviations 2·0.0625 + 2·1.5625 + 4·0.5625 = 5.5, over n − 1 = 7.
    b = 0.5 / (math.sqrt(5.5 / 7) + 1e-4)
    assert grpo_advantages(rewards, 4, scale="batch").tolist() == pytest.approx([b, -b, -b, b, 0, 0, 0, 0])
    assert grpo_advantages(rewards, 4, scale="none").tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_grpo_advantages_of_a_constant_group_are_zero_and_shapes_are_kept() -> None:
    assert grpo_advantages(t(3.0, 3.0, 3.0), 3).abs().max().item() == 0.0
    assert grpo_advantages(t(3.0, -1.0), 1).abs().max().item() == 0.0  # a group of one carries no signal
    grouped = rows([1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0])
    out = grpo_advantages(grouped, 4)
    assert out.shape == (2, 4)
    assert out.flatten().tolist() == pytest.approx(grpo_advantages(grouped.flatten(), 4).tolist())
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(t(1.0, 2.0, 3.0, 4.0), 3)
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(t(1.0, 2.0), 2, scale="max")  # type: ignore[arg-type]


def test_grpo_std_matches_trl() -> None:
    pytest.importorskip("trl")
    from trl.trainer.utils import nanstd

    gen = torch.Generator().manual_seed(1)
    rewards = torch.rand(12, generator=gen)
    grouped = rewards.view(-1, 4)
    # TRL's GRPOTrainer, scale_rewards="group": (r − group mean) / (nanstd(group) + 1e-4).
    expected = (grouped - grouped.mean(dim=1, keepdim=True)) / (nanstd(grouped, dim=1).unsqueeze(1) + 1e-4)
    assert grpo_advantages(rewards, 4).tolist() == pytest.approx(expected.flatten().tolist(), rel=1e-5)
    # scale_rewards="batch": the std of all rewards.
    expected = (grouped - grouped.mean(dim=1, keepdim=True)) / (nanstd(rewards) + 1e-4)
    assert grpo_advantages(rewards, 4, "batch").tolist() == pytest.approx(expected.flatten().tolist(), rel=1e-5)


def test_rloo_leaves_one_out() -> None:
    # r_0 = 1, others mean 1/3 → 2/3; r_1 = 0, others mean 2/3 → −2/3.
    assert rloo_advantages(t(1.0, 0.0, 0.0, 1.0), 4).tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    assert rloo_advantages(t(3.0, 1.0), 2).tolist() == pytest.approx([2.0, -2.0])
    gen = torch.Generator().manual_seed(2)
    rewards = torch.rand(5, 6, generator=gen, dtype=torch.float64)
    adv = rloo_advantages(rewards, 6)
    assert adv.sum(dim=1).abs().max().item() < 1e-12
    # Equivalent form G/(G − 1)·(r − mean).
    assert torch.allclose(adv, 6 / 5 * (rewards - rewards.mean(dim=1, keepdim=True)))


def test_rloo_needs_two_samples_per_prompt() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(t(1.0, 2.0), 1)


def test_gae_by_hand() -> None:
    # δ2 = 1 − 0.7 = 0.3; δ1 = 0.7 − 0.6 = 0.1; δ0 = 0.6 − 0.5 = 0.1.
    # A2 = 0.3; A1 = 0.1 + 0.95·0.3 = 0.385; A0 = 0.1 + 0.95·0.385 = 0.46575.
    adv, ret = gae(rows([0.0, 0.0, 1.0]), rows([0.5, 0.6, 0.7]), rows([1.0, 1.0, 1.0]), gamma=1.0, lam=0.95)
    assert adv[0].tolist() == pytest.approx([0.46575, 0.385, 0.3])
    assert ret[0].tolist() == pytest.approx([0.96575, 0.985, 1.0])


def test_gae_ignores_prompt_and_padding_positions() -> None:
    # The same three answer tokens with a prompt token in front and padding behind, holding values that must not leak.
    rewards = rows([5.0, 0.0, 0.0, 1.0, 9.0, 9.0])
    values = rows([4.0, 0.5, 0.6, 0.7, 8.0, 8.0])
    mask = rows([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert adv[0].tolist() == pytest.approx([0.0, 0.46575, 0.385, 0.3, 0.0, 0.0])
    assert ret[0].tolist() == pytest.approx([0.0, 0.96575, 0.985, 1.0, 0.0, 0.0])


def test_gae_with_lambda_one_and_zero_values_is_the_reward_to_go() -> None:
    rewards = rows([1.0, 2.0, 3.0], [0.0, 4.0, 0.0])
    mask = rows([1.0, 1.0, 1.0], [1.0, 1.0, 0.0])
    adv, ret = gae(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
    assert adv.flatten().tolist() == pytest.approx([6.0, 5.0, 3.0, 4.0, 4.0, 0.0])
    assert torch.equal(adv, ret)
    adv, _ = gae(rewards[:1], torch.zeros_like(rewards[:1]), mask[:1], gamma=0.9, lam=1.0)
    assert adv[0].tolist() == pytest.approx([1.0 + 0.9 * 2.0 + 0.81 * 3.0, 2.0 + 0.9 * 3.0, 3.0])


def test_gae_returns_constants() -> None:
    values = rows([0.5, 0.6]).requires_grad_()
    adv, ret = gae(rows([0.0, 1.0]), values, rows([1.0, 1.0]))
    assert not adv.requires_grad and not ret.requires_grad


def test_adaptive_kl_controller_by_hand_and_clipped() -> None:
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10_000)
    # KL 12 is 100% over target; the error is clipped to +0.2: 0.2·(1 + 0.2·256/10000).
    assert ctl.update(12.0, n_steps=256) == pytest.approx(0.2 * (1 + 0.2 * 0.0256))
    ctl = AdaptiveKLController(0.2, 6.0)
    assert ctl.update(6.6, 256) == pytest.approx(0.2 * (1 + 0.1 * 0.0256))  # within the clip: 10% over
    ctl = AdaptiveKLController(0.2, 6.0)
    assert ctl.update(0.0, 256) == pytest.approx(0.2 * (1 - 0.2 * 0.0256))  # far under: clipped to −0.2
    assert ctl.kl_coef == pytest.approx(0.2 * (1 - 0.2 * 0.0256))


def test_adaptive_kl_controller_moves_toward_the_target() -> None:
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=100)
    above = [ctl.update(3.0, 10) for _ in range(5)]
    assert all(b > a for a, b in zip([0.1, *above], above, strict=False))  # KL too high: the penalty grows
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=100)
    below = [ctl.update(0.5, 10) for _ in range(5)]
    assert all(b < a for a, b in zip([0.1, *below], below, strict=False))  # KL too low: it shrinks
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=100)
    assert ctl.update(1.0, 10) == pytest.approx(0.1)  # on target: unchanged
    with pytest.raises(ValueError, match="positive"):
        AdaptiveKLController(0.1, target=0.0)


def test_fixed_kl_controller_never_moves() -> None:
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 256) == 0.05 and ctl.kl_coef == 0.05
