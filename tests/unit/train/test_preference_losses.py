"""Preference losses against values worked out by hand with ``math``, plus the properties each paper promises."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tailorlm.train.align.losses import (
    bradley_terry_loss,
    dpo_loss,
    hinge_loss,
    implicit_rewards,
    ipo_loss,
    kto_loss,
    kto_reference_point,
    log1mexp,
    orpo_loss,
    preference_metrics,
    simpo_loss,
)

pytestmark = pytest.mark.unit


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: float) -> float:
    """−log σ(−x) = log(1 + e^x), written out so that the expected values do not reuse the code under test."""
    return math.log(1.0 + math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# One pair used throughout: the policy gained 1 nat on the chosen answer and lost 1 on the rejected one, so h = 2.
POLICY_C, POLICY_R, REF_C, REF_R = t(-10.0), t(-12.0), t(-11.0), t(-11.0)


def test_bradley_terry_with_and_without_a_margin() -> None:
    assert bradley_terry_loss(t(1.0), t(0.5)).item() == pytest.approx(softplus(-0.5))
    # A margin of 1 turns a 0.5 lead into a 0.5 deficit.
    assert bradley_terry_loss(t(1.0), t(0.5), margin=t(1.0)).item() == pytest.approx(softplus(0.5))
    assert bradley_terry_loss(t(2.0, 0.0), t(2.0, 3.0), margin=0.0).tolist() == pytest.approx(
        [math.log(2.0), softplus(3.0)]
    )


def test_dpo_matches_the_hand_computed_loss_and_its_smoothed_form() -> None:
    # β·h = 0.1 · 2 = 0.2
    assert dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R).item() == pytest.approx(softplus(-0.2))
    expected = 0.9 * softplus(-0.2) + 0.1 * softplus(0.2)  # cDPO: −0.9·log σ(0.2) − 0.1·log σ(−0.2)
    assert dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, label_smoothing=0.1).item() == pytest.approx(expected)
    assert dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=1.0).item() == pytest.approx(softplus(-2.0))


def test_dpo_is_log_2_while_the_policy_equals_the_reference() -> None:
    logps = t(-3.0, -7.5, -20.0)
    other = t(-4.0, -1.0, -9.0)
    for beta in (0.1, 0.5):
        for eps in (0.0, 0.2):
            losses = dpo_loss(logps, other, logps, other, beta=beta, label_smoothing=eps)
            assert losses.tolist() == pytest.approx([math.log(2.0)] * 3)


def test_cdpo_with_zero_smoothing_is_dpo() -> None:
    pc, pr, rc, rr = t(-5.0, -2.0), t(-6.0, -1.0), t(-5.5, -2.5), t(-5.0, -1.5)
    smoothed = dpo_loss(pc, pr, rc, rr, beta=0.3, label_smoothing=0.0)
    plain = [softplus(-0.3 * ((-5.0 + 5.5) - (-6.0 + 5.0))), softplus(-0.3 * ((-2.0 + 2.5) - (-1.0 + 1.5)))]
    assert smoothed.tolist() == pytest.approx(plain)


def test_dpo_refuses_smoothing_of_a_half_or_more() -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, label_smoothing=0.5)


def test_dpo_gradient_reaches_the_policy_with_the_hand_computed_value() -> None:
    # The caller passes reference log-probs from a no-grad forward; here they are plain tensors.
    pc, pr = t(-10.0).requires_grad_(), t(-12.0).requires_grad_()
    dpo_loss(pc, pr, REF_C, REF_R).sum().backward()
    # d/dπ_c of −log σ(βh) = −β·σ(−βh) = −0.1 / (1 + e^{0.2}); the rejected side gets the opposite sign.
    assert pc.grad is not None and pr.grad is not None
    assert pc.grad.item() == pytest.approx(-0.1 / (1.0 + math.exp(0.2)))
    assert pr.grad.item() == pytest.approx(0.1 / (1.0 + math.exp(0.2)))
    # At policy == reference the gradient is ∓β/2.
    same_c, same_r = t(-11.0).requires_grad_(), t(-11.0).requires_grad_()
    dpo_loss(same_c, same_r, REF_C, REF_R).sum().backward()
    assert (same_c.grad.item(), same_r.grad.item()) == pytest.approx((-0.05, 0.05))  # type: ignore[union-attr]


def test_the_loss_does_not_detach_the_reference_that_is_the_callers_job() -> None:
    rc = REF_C.clone().requires_grad_()
    dpo_loss(POLICY_C, POLICY_R, rc, REF_R).sum().backward()
    assert rc.grad is not None and rc.grad.item() == pytest.approx(0.1 / (1.0 + math.exp(0.2)))


def test_ipo_regresses_the_margin_to_one_over_two_tau() -> None:
    assert ipo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1).item() == pytest.approx((2.0 - 5.0) ** 2)
    assert ipo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.25).item() == pytest.approx(0.0)  # 1/(2τ) = h
    # Overshooting the target is penalised too, unlike DPO.
    assert ipo_loss(t(0.0), t(-10.0), t(0.0), t(0.0), beta=0.5).item() == pytest.approx((10.0 - 1.0) ** 2)


def test_hinge_is_zero_past_the_margin() -> None:
    assert hinge_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1).item() == pytest.approx(1.0 - 0.2)
    assert hinge_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=1.0).item() == 0.0
    assert hinge_loss(POLICY_R, POLICY_C, REF_C, REF_R, beta=0.1).item() == pytest.approx(1.0 + 0.2)


def test_simpo_uses_gamma_as_a_fraction_of_beta() -> None:
    # β = 2, γ = 1: β·(−0.5 − (−1.0)) − γ = 0, so the loss is log 2.
    assert simpo_loss(t(-0.5), t(-1.0)).item() == pytest.approx(math.log(2.0))
    # β = 2.5, γ/β = 0.4 → γ = 1: 2.5·1 − 1 = 1.5.
    assert simpo_loss(t(-1.0), t(-2.0), beta=2.5, gamma_beta_ratio=0.4).item() == pytest.approx(softplus(-1.5))
    assert simpo_loss(t(-1.0), t(-1.0), beta=2.0, gamma_beta_ratio=0.0).item() == pytest.approx(math.log(2.0))


def test_orpo_odds_ratio_by_hand() -> None:
    # P_c = 0.5 → odds 1; P_r = 0.2 → odds 1/4. Odds ratio 4: −log σ(log 4) = log(1 + 1/4).
    total, odds_ratio = orpo_loss(t(math.log(0.5)), t(math.log(0.2)), t(2.0), lambda_=0.1)
    assert odds_ratio.item() == pytest.approx(math.log(1.25))
    assert total.item() == pytest.approx(2.0 + 0.1 * math.log(1.25))
    # A scalar NLL broadcasts over the pairs.
    total, odds_ratio = orpo_loss(t(math.log(0.2), math.log(0.5)), t(math.log(0.5), math.log(0.5)), t(1.0)[0])
    assert odds_ratio.tolist() == pytest.approx([math.log(1.0 + 4.0), math.log(2.0)])
    assert total.tolist() == pytest.approx([1.0 + 0.1 * math.log(5.0), 1.0 + 0.1 * math.log(2.0)])


def test_log1mexp_is_accurate_and_finite_with_finite_gradients_at_the_extremes() -> None:
    x = t(-1e-8, -0.1, math.log(0.5), -2.0, -50.0).requires_grad_()
    y = log1mexp(x)
    expected = [math.log(-math.expm1(v)) for v in (-1e-8, -0.1, math.log(0.5), -2.0)] + [math.log1p(-math.exp(-50.0))]
    assert y.tolist() == pytest.approx(expected, rel=1e-12)
    y.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert log1mexp(t(0.0)).item() == -math.inf


def test_orpo_is_finite_for_an_answer_the_model_is_almost_sure_of() -> None:
    chosen = t(-1e-6, -30.0).requires_grad_()
    total, odds_ratio = orpo_loss(chosen, t(-1.0, -1.0), t(0.5))
    total.sum().backward()
    assert bool(torch.isfinite(odds_ratio).all()) and chosen.grad is not None
    assert bool(torch.isfinite(chosen.grad).all())
    # log odds = log P − log(1 − P); for log P = −1e-6 that is about log(1e6), so the chosen answer wins by a lot.
    log_odds_c = -1e-6 - math.log(-math.expm1(-1e-6))
    log_odds_r = -1.0 - math.log(-math.expm1(-1.0))
    assert odds_ratio[0].item() == pytest.approx(softplus(-(log_odds_c - log_odds_r)), rel=1e-9)


def test_kto_by_hand_with_weights_and_the_reference_point() -> None:
    policy, ref = t(-5.0, -5.0), t(-6.0, -4.0)  # log ratios r = [1, −1]
    desirable = torch.tensor([True, False])
    losses = kto_loss(policy, ref, desirable, kl_ref_point=0.5, desirable_weight=1.5, undesirable_weight=0.5)
    expected = [1.5 * (1.0 - sigmoid(0.1 * (1.0 - 0.5))), 0.5 * (1.0 - sigmoid(0.1 * (0.5 - (-1.0))))]
    assert losses.tolist() == pytest.approx(expected)


def test_kto_clamps_a_negative_reference_point_and_never_backpropagates_through_it() -> None:
    policy, ref, desirable = t(-5.0, -5.0), t(-6.0, -4.0), torch.tensor([True, False])
    z0 = t(-3.0)[0].requires_grad_()
    assert kto_loss(policy, ref, desirable, z0).tolist() == pytest.approx(
        kto_loss(policy, ref, desirable, 0.0).tolist()
    )
    p = policy.clone().requires_grad_()
    z0 = t(0.7)[0].requires_grad_()
    kto_loss(p, ref, desirable, z0).sum().backward()
    assert z0.grad is None and p.grad is not None
    # d/dp of 1 − σ(β(p − ref − z0)) = −β·σ(x)·σ(−x) with x = 0.1·(1 − 0.7) = 0.03.
    s = sigmoid(0.03)
    assert p.grad[0].item() == pytest.approx(-0.1 * s * (1.0 - s))


def test_kto_reference_point_is_the_clamped_detached_mean_log_ratio() -> None:
    assert kto_reference_point(t(-1.0, -2.0), t(-2.0, -2.5)).item() == pytest.approx((1.0 + 0.5) / 2)
    assert kto_reference_point(t(-1.0, -2.0), t(-1.5, -1.0)).item() == 0.0  # mean −0.25, clamped
    p = t(-1.0, -2.0).requires_grad_()
    assert not kto_reference_point(p, t(-2.0, -2.5)).requires_grad


def test_implicit_rewards_and_metrics() -> None:
    assert implicit_rewards(t(-10.0, -3.0), t(-11.0, -1.0), beta=0.1).tolist() == pytest.approx([0.1, -0.2])
    metrics = preference_metrics(t(1.0, 0.0, 2.0, 0.5), t(0.0, 0.0, 3.0, 0.5))
    # One strict win in four; the two ties count as wrong (TRL's convention).
    assert metrics == pytest.approx({"accuracy": 0.25, "margin": 0.0, "chosen": 0.875, "rejected": 0.875})
    assert preference_metrics(t(0.0, 0.0), t(0.0, 0.0))["accuracy"] == 0.0


# --- the same formulas in TRL: its CPO and ORPO trainers keep the loss in a method that reads a few attributes, so
# a stand-in for ``self`` is enough and no trainer is built.


def _stub(**attrs: object) -> SimpleNamespace:
    return SimpleNamespace(accelerator=SimpleNamespace(device=torch.device("cpu")), alpha=0.0, **attrs)


@pytest.mark.filterwarnings("ignore::UserWarning")  # trl.experimental announces itself on import
def test_cdpo_hinge_ipo_and_simpo_match_trl() -> None:
    pytest.importorskip("trl")
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    chosen, rejected = t(-3.0, -8.0, -1.5, -0.2), t(-4.5, -6.0, -1.0, -2.0)
    zero = torch.zeros_like(chosen)  # CPO has no reference: DPO with a reference of 0 is the same loss
    stub = _stub(loss_type="sigmoid", beta=0.3, label_smoothing=0.15, simpo_gamma=0.0)
    ours = dpo_loss(chosen, rejected, zero, zero, beta=0.3, label_smoothing=0.15)
    assert ours.tolist() == pytest.approx(CPOTrainer.cpo_loss(stub, chosen, rejected)[0].tolist())

    stub = _stub(loss_type="hinge", beta=0.3, label_smoothing=0.0, simpo_gamma=0.0)
    ours = hinge_loss(chosen, rejected, zero, zero, beta=0.3)
    assert ours.tolist() == pytest.approx(CPOTrainer.cpo_loss(stub, chosen, rejected)[0].tolist())

    stub = _stub(loss_type="ipo", beta=0.3, label_smoothing=0.0, simpo_gamma=0.0)
    ours = ipo_loss(chosen, rejected, zero, zero, beta=0.3)
    assert ours.tolist() == pytest.approx(CPOTrainer.cpo_loss(stub, chosen, rejected)[0].tolist())

    # TRL's simpo_gamma is γ itself: γ = gamma_beta_ratio · β.
    stub = _stub(loss_type="simpo", beta=2.0, label_smoothing=0.0, simpo_gamma=0.5 * 2.0)
    ours = simpo_loss(chosen, rejected, beta=2.0, gamma_beta_ratio=0.5)
    assert ours.tolist() == pytest.approx(CPOTrainer.cpo_loss(stub, chosen, rejected)[0].tolist())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_orpo_matches_trl() -> None:
    pytest.importorskip("trl")
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer
    from trl.experimental.orpo.orpo_trainer import log1mexp as trl_log1mexp

    chosen, rejected = t(-0.05, -1.2, -3.0, -0.7), t(-0.4, -0.9, -5.0, -0.69)
    # TRL returns β·log σ(log odds ratio) (a reward, to subtract from the NLL); ours is the positive loss term.
    trl_ratio = ORPOTrainer.odds_ratio_loss(_stub(beta=0.1), chosen, rejected)[0]
    total, odds_ratio = orpo_loss(chosen, rejected, t(1.7)[0], lambda_=0.1)
    assert (0.1 * odds_ratio).tolist() == pytest.approx((-trl_ratio).tolist())
    assert total.mean().item() == pytest.approx(1.7 - trl_ratio.mean().item())  # TRL: nll − losses.mean()
    x = t(-1e-7, -0.3, -0.7, -4.0)
    assert log1mexp(x).tolist() == pytest.approx(trl_log1mexp(x).tolist(), rel=1e-12)
