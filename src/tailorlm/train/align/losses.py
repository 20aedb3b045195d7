"""Preference losses as small pure functions on per-sequence log-probabilities.

TRL's trainers compute these losses inside their ``compute_loss``; the same math lives here, one function per
method, so that it can be read next to its paper, tested against numbers worked out by hand, and reused where no
trainer runs (scoring pairs, probes, metrics).

Conventions shared by every function:

* Inputs are tensors of shape ``[B]``: one log-probability per sequence, **summed** over the answer tokens unless a
  docstring says *average* (SimPO, ORPO use the mean over answer tokens).
* Outputs are per-pair (or per-example) losses of shape ``[B]``, never reduced: the caller picks the reduction
  (TRL takes the mean over the batch).
* Nothing is detached here except KTO's reference point (the paper says not to back-propagate through it).
  Reference log-probabilities must come from a ``torch.no_grad()`` forward (or be ``.detach()``-ed) by the caller;
  otherwise gradients flow into the reference as well.
* ``h`` below is the DPO log-ratio margin ``(logπ(y_c) − logπ_ref(y_c)) − (logπ(y_r) − logπ_ref(y_r))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# log(1 − e^x) switches formula at −log 2 (Mächler 2012, "Accurately computing log(1 − exp(−|a|))"): below it
# exp(x) < ½ and log1p(−exp(x)) is exact; above it 1 − exp(x) cancels and −expm1(x) keeps the precision.
_LOG_HALF = -0.6931471805599453


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Reward-model loss ``−log σ(r_c − r_r − m)`` per pair.

    The Bradley–Terry model says P(chosen ≻ rejected) = σ(r_c − r_r); the loss is its negative log-likelihood
    (InstructGPT, Ouyang et al. 2022, arXiv:2203.02155, Eq. 1). Llama 2 (Touvron et al. 2023, arXiv:2307.09288,
    Eq. 2) subtracts a margin ``m`` that grows with how strongly raters preferred the chosen answer, so clear
    preferences must be separated by more. ``margin=None`` is the plain loss; TRL's ``RewardTrainer`` uses the same
    formula when the batch has a ``"margin"`` column.
    """
    logits = chosen_rewards - rejected_rewards
    if margin is not None:
        logits = logits - margin
    return -F.logsigmoid(logits)


def _log_ratio_margin(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor
) -> torch.Tensor:
    """``h = (logπ_c − logπ_ref,c) − (logπ_r − logπ_ref,r)``, the quantity every DPO-family loss is a function of."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Sigmoid DPO ``−log σ(β·h)`` (Rafailov et al. 2023, arXiv:2305.18290, Eq. 7), with optional cDPO smoothing.

    With ``label_smoothing = ε > 0`` it is conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"):
    each label is assumed flipped with probability ε, so the loss is the cross-entropy against the soft target
    ``−(1 − ε)·log σ(βh) − ε·log σ(−βh)``. Its optimum is a finite margin instead of h → ∞. ε = 0 is plain DPO.

    This is not robust DPO (Chowdhury et al. 2024, arXiv:2403.00409), which TRL calls ``loss_type="robust"``: that
    one subtracts the flipped term and divides by ``1 − 2ε`` to make the loss unbiased under noise. TRL 1.16's
    ``"sigmoid"`` ignores ``label_smoothing``; its cDPO form survives in the CPO trainer.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5); got {label_smoothing}")
    logits = beta * _log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """IPO ``(h − 1/(2τ))²`` with τ = ``beta`` (Azar et al. 2023, arXiv:2310.12036, Eq. 17).

    A squared loss regresses the margin to the finite target 1/(2τ) instead of pushing it to infinity, which is
    what lets DPO overfit deterministic preferences. The paper writes h with sequence log-probabilities, i.e. sums
    over tokens, and that is what this function assumes. TRL 1.16 instead divides each log-ratio by its answer
    length (its comment says the IPO authors confirmed that normalisation); to reproduce TRL, pass per-token
    **averages** of the four log-probabilities. With sums the margin grows with length, so a τ tuned for one form
    does not transfer to the other.
    """
    h = _log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return (h - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """Hinge loss ``max(0, 1 − β·h)`` on the reference-normalised margin.

    SLiC-HF (Zhao et al. 2023, arXiv:2305.10425, Sec. 2) calibrates with a hinge on the raw log-likelihood margin
    ``max(0, δ − logπ(y_c) + logπ(y_r))``; RSO (Liu et al. 2024, arXiv:2309.06657, "hinge-norm") replaces the raw
    margin with the reference-normalised one, which is this form and TRL's ``loss_type="hinge"``. 1/β plays the role
    of SLiC's δ: pairs whose margin already exceeds it contribute neither loss nor gradient.
    """
    h = _log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return torch.relu(1.0 - beta * h)


def simpo_loss(
    policy_chosen_avg: torch.Tensor,
    policy_rejected_avg: torch.Tensor,
    beta: float = 2.0,
    gamma_beta_ratio: float = 0.5,
) -> torch.Tensor:
    """SimPO ``−log σ(β·(avg_c − avg_r) − γ)`` with γ = ``gamma_beta_ratio``·β (Meng et al. 2024, Eq. 6).

    arXiv:2405.14734. Inputs are **length-averaged** log-probabilities (mean over answer tokens), the quantity
    decoding ranks by, and there is no reference model. The target margin γ asks the chosen answer to win by a clear
    gap. Defaults are the paper's released configuration (β = 2.0, γ/β = 0.5). TRL's CPO trainer
    (``loss_type="simpo"``) takes γ itself as ``simpo_gamma``; ``simpo_gamma = gamma_beta_ratio * beta`` gives the
    same loss.
    """
    gamma = gamma_beta_ratio * beta
    return -F.logsigmoid(beta * (policy_chosen_avg - policy_rejected_avg) - gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − exp(x))`` for x < 0, accurate on both sides of −log 2 (see ``_LOG_HALF``); −inf at x = 0."""
    # Both branches are evaluated by torch.where; clamping the argument each branch does not use keeps them finite
    # so that the unused branch cannot put a NaN into the gradient.
    small = torch.log1p(-torch.exp(torch.clamp(x, max=_LOG_HALF)))
    large = torch.log(-torch.expm1(torch.clamp(x, min=_LOG_HALF)))
    return torch.where(x < _LOG_HALF, small, large)


def orpo_loss(
    chosen_avg_logp: torch.Tensor,
    rejected_avg_logp: torch.Tensor,
    chosen_nll: torch.Tensor,
    lambda_: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ORPO ``L_SFT + λ·L_OR`` (Hong et al. 2024, arXiv:2403.07691, Sec. 4); returns ``(total, L_OR)`` per pair.

    ``L_OR = −log σ(log odds(y_c) − log odds(y_r))`` with odds(y) = P/(1 − P) and P = exp(average token log-prob),
    so ``log odds = avg_logp − log(1 − exp(avg_logp))``; the second term is computed with ``log1mexp`` because
    P is close to 1 for confident answers. No reference model: the SFT term anchors the policy and the odds ratio
    penalises the rejected answer only mildly, which the paper argues keeps SFT from degenerating.

    ``chosen_avg_logp`` and ``rejected_avg_logp`` are mean log-probs over answer tokens (must be < 0);
    ``chosen_nll`` is the chosen answer's SFT loss, per pair ``[B]`` or one scalar (TRL uses the token mean over the
    batch), broadcast against the odds-ratio term. λ = 0.1 is the paper's value and TRL's default ``beta``.
    """
    log_odds = (chosen_avg_logp - rejected_avg_logp) - (log1mexp(chosen_avg_logp) - log1mexp(rejected_avg_logp))
    odds_ratio_loss = -F.logsigmoid(log_odds)
    return chosen_nll + lambda_ * odds_ratio_loss, odds_ratio_loss


def kto_reference_point(policy_mismatched_logps: torch.Tensor, ref_mismatched_logps: torch.Tensor) -> torch.Tensor:
    """KTO's z0: the batch estimate of KL(π‖π_ref), detached and clamped at 0 (Ethayarajh et al. 2024, Sec. 4.1).

    The paper estimates it from *mismatched* pairs (a prompt with another example's answer) so that it reflects the
    policy's drift in general rather than on the answers being scored. It is biased but cheap, and is not
    back-propagated: it only sets the point against which gains and losses are measured.
    """
    return (policy_mismatched_logps - ref_mismatched_logps).mean().detach().clamp(min=0.0)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl_ref_point: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """KTO per example (Ethayarajh et al. 2024, arXiv:2402.01306, Sec. 4.1, the loss ``E[λ_y − v(x, y)]``).

    With r = logπ − logπ_ref and z0 the reference point, the Kahneman–Tversky value is ``λ_D·σ(β(r − z0))`` for a
    desirable answer and ``λ_U·σ(β(z0 − r))`` for an undesirable one, and the loss is ``λ_y − v``:

    * desirable: ``w_D·(1 − σ(β(r − z0)))``
    * undesirable: ``w_U·(1 − σ(β(z0 − r)))``

    KTO needs only a thumbs-up/down per answer, not pairs. ``desirable`` is a bool tensor ``[B]``. ``kl_ref_point``
    is detached and clamped at 0 here whatever the caller passes (see ``kto_reference_point``). The weights let one
    side count more when the data is imbalanced; the paper suggests ``w_D·n_D / (w_U·n_U)`` in [1, 4/3].
    The result keeps the input order (TRL concatenates the desirable then the undesirable losses instead).
    """
    z0 = torch.as_tensor(kl_ref_point, dtype=policy_logps.dtype, device=policy_logps.device).detach().clamp(min=0.0)
    log_ratio = policy_logps - ref_logps
    desirable = desirable.to(torch.bool)
    gain = desirable_weight * (1.0 - torch.sigmoid(beta * (log_ratio - z0)))
    loss = undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - log_ratio)))
    return torch.where(desirable, gain, loss)


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward ``β·(logπ − logπ_ref)`` (Rafailov et al. 2023, Eq. 5, up to the prompt's partition term).

    Not detached: wrap in ``torch.no_grad()`` (or ``.detach()`` the result) when it is only logged.
    """
    return beta * (policy_logps - ref_logps)


def preference_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, float]:
    """Mean accuracy, margin and rewards of a batch of pairs, as plain floats for logging.

    ``accuracy`` counts a pair as right only when the chosen reward is **strictly** greater; a tie counts as wrong.
    That matches TRL's ``rewards/accuracies`` (DPO) and ``accuracy`` (reward model) so the numbers line up with its
    logs, and it means DPO's accuracy starts at 0, not 0.5, while the policy still equals the reference.
    """
    with torch.no_grad():
        chosen = chosen_rewards.detach().float()
        rejected = rejected_rewards.detach().float()
        return {
            "accuracy": (chosen > rejected).float().mean().item(),
            "margin": (chosen - rejected).mean().item(),
            "chosen": chosen.mean().item(),
            "rejected": rejected.mean().item(),
        }
