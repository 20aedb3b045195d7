"""The arithmetic of online RL for language models: KL estimates, per-token rewards, advantages, KL control.

TRL's GRPO and RLOO trainers do this inside their loops (and TRL 1.16 ships no PPO trainer at all); here each piece
is a small pure function with its paper, so the recipes, the tests and anyone reading the logs share one definition.

Shapes: per-token tensors are ``[B, T]`` with a 0/1 ``mask`` that marks the answer tokens (prompt and padding are 0;
the ones of a row must be contiguous, as with right padding). Per-sequence tensors are ``[B]``. Group tensors for
GRPO/RLOO are ``[n_prompts * G]`` with the G answers of a prompt next to each other (TRL's layout, what
``repeat_interleave`` gives), or ``[n_prompts, G]``; the result has the shape of the input.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch

KLEstimator = Literal["k1", "k2", "k3"]
GroupScale = Literal["group", "batch", "none"]


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from log-probs of tokens sampled from π (Schulman 2020, "Approximating KL
    divergence", http://joschu.net/blog/kl-approx.html).

    With d = logπ_ref − logπ (so the ratio r = π_ref/π = e^d):

    * ``k1 = −d = logπ − logπ_ref``: unbiased, high variance, negative on some tokens.
    * ``k2 = ½·d²``: biased, low variance, ≥ 0.
    * ``k3 = (r − 1) − log r = e^d − 1 − d``: unbiased and ≥ 0 (log r ≤ r − 1); GRPO's penalty (DeepSeekMath Eq. 4).
    """
    d = ref_logprobs - logprobs
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d**2
    if estimator == "k3":
        return torch.expm1(d) - d  # expm1 keeps precision when π ≈ π_ref, where e^d − 1 − d is a small difference
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1', 'k2' or 'k3'")


def sequence_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """KL(π‖π_ref) of each sequence ``[B]``: the per-token estimate summed over the answer tokens."""
    return (kl_estimate(logprobs, ref_logprobs, estimator) * mask).sum(dim=-1)


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of the last answer token of each row ``[B]``; a row without one is an error, not a silent index 0."""
    present = mask.bool()
    if not bool(present.any(dim=-1).all()):
        raise ValueError("every row of mask needs at least one answer token")
    positions = torch.arange(mask.size(-1), device=mask.device)
    return torch.where(present, positions, -1).amax(dim=-1)


def kl_penalized_rewards(
    score: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float | torch.Tensor,
    estimator: KLEstimator = "k1",
) -> torch.Tensor:
    """PPO's per-token rewards ``[B, T]``: −kl_coef·KL_t on every answer token, plus the score on the last one.

    This spreads the KL-regularised objective R(x, y) = r(x, y) − β·log(π(y|x)/π_ref(y|x)) (Ziegler et al. 2019,
    arXiv:1909.08593, Eq. 2; InstructGPT, Ouyang et al. 2022, Eq. 2) over tokens: the sequence's log-ratio is the
    sum of the per-token ones, and the reward model scores only the finished answer. Summed over a row the rewards
    are ``score − kl_coef·sequence_kl``. Zero outside the mask. The KL term is computed from the tensors as given:
    pass detached log-probs (the rollout's), since these rewards are constants for the policy update.
    """
    rewards = -kl_coef * kl_estimate(logprobs, ref_logprobs, estimator) * mask
    last = _last_index(mask)
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last] = rewards[rows, last] + score.to(rewards.dtype)
    return rewards


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[n_prompts, G]`` view of flat or already-grouped rewards, checking that the groups are whole."""
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1; got {group_size}")
    if rewards.dim() == 2:
        if rewards.size(1) != group_size:
            raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not have groups of {group_size}")
        return rewards
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.view(-1, group_size)


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, scale: GroupScale = "group", eps: float = 1e-4
) -> torch.Tensor:
    """GRPO's outcome advantages: each reward minus its group's mean, over a standard deviation.

    DeepSeekMath (Shao et al. 2024, arXiv:2402.03300, Sec. 4.1.2) sets Â_i = (r_i − mean(r)) / std(r) over the G
    answers to one prompt, so the group replaces PPO's value network as the baseline. The std here is
    ``torch.std``'s unbiased one (divides by G − 1), as in TRL's ``GRPOTrainer`` (its ``nanstd`` applies Bessel's
    correction), and ``eps = 1e-4`` is TRL's. ``scale``:

    * ``"group"``: divide by the group's std (the paper, TRL's default).
    * ``"batch"``: divide by the std of all rewards in the batch (TRL's ``scale_rewards="batch"``); the mean is still
      the group's.
    * ``"none"``: no division (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783): dividing by the std up-weights prompts
      that are almost always right or almost always wrong, a difficulty bias.

    A group whose rewards are all equal gets zero advantages (it carries no signal); so does a group of one.
    """
    grouped = _grouped(rewards, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred.view_as(rewards)
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
    elif scale == "batch":
        std = grouped.std() if grouped.numel() > 1 else torch.zeros((), dtype=grouped.dtype, device=grouped.device)
    else:
        raise ValueError(f"unknown scale {scale!r}; expected 'group', 'batch' or 'none'")
    return (centred / (std + eps)).view_as(rewards)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out: each reward minus the mean of the other G − 1 in its group.

    RLOO (Ahmadian et al. 2024, arXiv:2402.14740, Sec. 3; Kool et al. 2019, "Buy 4 REINFORCE samples") uses the
    other samples of the same prompt as the baseline, which keeps the gradient estimate unbiased (the baseline does
    not depend on the sample it is subtracted from). It equals G/(G − 1)·(r_i − mean(r)), so a group's advantages
    sum to zero. No std scaling (TRL's ``normalize_advantages`` is a separate, batch-wide option).
    """
    if group_size < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt to leave one out; got group_size={group_size}")
    grouped = _grouped(rewards, group_size)
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others_mean).view_as(rewards)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over answer tokens; returns ``(advantages, returns)``, both ``[B, T]``.

    Â_t = Σ_l (γλ)^l δ_{t+l} with δ_t = r_t + γ·V_{t+1} − V_t (Schulman et al. 2016, arXiv:1506.02438, Eq. 16),
    computed backwards as Â_t = δ_t + γλ·Â_{t+1}. The value after the last answer token is 0 (the episode ends),
    and masked positions (prompt, padding) contribute nothing and get zero advantage and return.
    ``returns = advantages + values`` is the value head's target. γ = 1 is the usual choice for LLM RLHF (the
    reward is at the end and episodes are short); λ = 0.95 is the common PPO default. Rewards and values are
    detached: advantages are constants in the PPO loss.
    """
    mask = mask.to(values.dtype)
    rewards = rewards.detach() * mask
    values = values.detach() * mask
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        # Masked-out next positions hold zeros, so past the last answer token V_{t+1} = 0 and nothing propagates.
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


class KLController(Protocol):
    """What PPO needs from a KL-coefficient schedule: the current value and a way to feed back the measured KL."""

    kl_coef: float

    def update(self, current_kl: float, n_steps: int) -> float: ...


class FixedKLController:
    """A constant KL coefficient; ``update`` only returns it (same interface as ``AdaptiveKLController``)."""

    def __init__(self, kl_coef: float) -> None:
        self.kl_coef = kl_coef

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.kl_coef


class AdaptiveKLController:
    """Proportional control of the KL coefficient toward a target KL (Ziegler et al. 2019, arXiv:1909.08593, Sec. 2.2).

    The paper sets e_t = clip(KL_t/KL_target − 1, −0.2, 0.2) and β ← β·(1 + K_β·e_t). As in OpenAI's
    lm-human-preferences code (and TRL's former PPO trainer), K_β = n_steps/horizon: a batch of ``n_steps`` samples
    moves β by that fraction of the error, so β changes at most by a factor 1 ± 0.2·n_steps/horizon per update.
    KL above target raises β (pulls the policy back); below target lowers it.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int = 10_000) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive; got target={target}, horizon={horizon}")
        self.kl_coef = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.kl_coef *= 1.0 + proportional_error * n_steps / self.horizon
        return self.kl_coef


# --- PPO's clipped objectives (Schulman et al. 2017, arXiv:1707.06347) ----------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (a scalar; 0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``values`` normalised to mean 0 and variance 1 over the masked positions (zero elsewhere).

    PPO for language models whitens the advantages of a batch (Ziegler et al.'s lm-human-preferences; Huang et al.
    2024, "The N+ implementation details of RLHF with PPO", arXiv:2403.17031, detail 4): the scale of the reward model
    then does not set the step size. The variance is the unbiased one over the masked entries, as there.
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    centred = (values - mean) * mask
    n = mask.sum()
    var = (centred**2).sum() / (n - 1).clamp(min=1.0)
    whitened = centred * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean * mask
    return whitened * mask


def ppo_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, to minimise: the masked mean of max(−Â·ρ, −Â·clip(ρ, 1 − ε, 1 + ε)) with the
    per-token ratio ρ = π/π_old (Schulman et al. 2017, Eq. 7, negated). Returns ``(loss, clip_fraction)``: the share
    of answer tokens where the clipped term was the larger one (the update was held back there)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
    return loss, clip_fraction.detach()


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """The value head's clipped squared error, to minimise: ½·masked mean of max((V − R)², (V_clip − R)²) with
    V_clip = V_old + clip(V − V_old, −ε, ε) (OpenAI baselines' ppo2, kept by lm-human-preferences and TRL's former
    PPO trainer). Returns ``(loss, clip_fraction)``."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(values.dtype), mask)
    return loss, clip_fraction.detach()
