"""The recipe of ``tailor train rl``: online RL (GRPO or RLOO) of a policy against a reward, with a KL leash.

    model: default
    algorithm: grpo                     # or rloo
    task: examples/xquad-qa/task.yaml   # its train: records are the prompts, their references feed the reward
    reward: {kind: metric}              # the task's primary metric against the reference (a verifiable reward)
    group_size: 4                       # answers sampled per prompt
    strategy: {method: lora}
    training: {max_steps: 50}

The trainer knobs are SFT's (``train/sft/config.py``); what differs is the defaults each paper gives, kept here with
their sources, and the data: prompts (with references when the reward needs them) instead of chats.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tailorlm.core.config import StrictModel
from tailorlm.core.task import TrainingCanarySpec
from tailorlm.train.sft.config import LORA_FAMILY, Strategy, Training

RlAlgorithm = Literal["grpo", "rloo", "ppo"]
RewardKind = Literal["metric", "reward_model", "python"]

# The KL coefficient per algorithm when the recipe gives none.
BETA_DEFAULTS: dict[str, float] = {
    # DeepSeekMath (Shao et al. 2024, arXiv:2402.03300, Sec. 4.2): beta 0.04. TRL's GRPOConfig defaults to 0 (no
    # reference model, after DAPO and Dr. GRPO); with LoRA the reference costs no memory (the adapter off), only one
    # extra forward pass per step, and it is what keeps a small policy from drifting into reward hacking.
    "grpo": 0.04,
    # TRL's RLOOConfig default (0.05), a sequence-level k1 penalty subtracted from the reward as in Ahmadian et al.
    # 2024 (arXiv:2402.14740).
    "rloo": 0.05,
    # TRL's former PPOConfig (kl_coef 0.05, trl 0.11–0.x), a per-token k1 penalty in the reward (Ziegler et al. 2019).
    "ppo": 0.05,
}
# AdamW learning rates: "LoRA Without Regret" (Schulman et al. 2025, Thinking Machines; reproduced in TRL's
# docs/lora_without_regret.md): GRPO with LoRA at 1e-5 matched full fine-tuning at 1e-6 (TRL's GRPO default).
LORA_LEARNING_RATE = 1e-5
FULL_LEARNING_RATE = 1e-6


class RewardSpec(StrictModel):
    """Where the reward comes from. One of three kinds:

    - ``metric``: the task's metric against each prompt's reference(s), read out of the completion as the eval
      harness reads it (a verifiable reward: F1 for QA, accuracy for labels);
    - ``reward_model``: a reward model trained with ``tailor train reward`` scores prompt + completion;
    - ``python``: ``module:function`` (or ``file.py:function``) called as ``fn(prompts, completions, references)``
      with the prompts as message lists, the completions as text and the references as lists of strings (empty
      when a prompt has none); it returns one float per completion (None: could not score).
    """

    kind: RewardKind = Field("metric", description="metric | reward_model | python.")
    metric: str | None = Field(None, description="metric: the metric's name; None: the task's primary metric.")
    reward_model: str | None = Field(None, description="reward_model: the reward model's System folder.")
    function: str | None = Field(None, description='python: "module:function" or "path/to/file.py:function".')
    stop: list[str] | None = Field(
        None,
        description="Completions are cut at the first of these strings before scoring, as the eval harness cuts "
        "answers; None: the task's generation.stop.",
    )

    @model_validator(mode="after")
    def _source(self) -> RewardSpec:
        if self.kind == "reward_model" and not self.reward_model:
            raise ValueError("reward.kind reward_model needs reward.reward_model: PATH (a `tailor train reward` run)")
        if self.kind == "python" and (not self.function or ":" not in self.function):
            raise ValueError('reward.kind python needs reward.function: "module:function"')
        return self


class PpoSpec(StrictModel):
    """PPO's own knobs; the defaults are TRL's former ``PPOConfig`` (and Huang et al. 2024, arXiv:2403.17031)."""

    epochs: int = Field(4, ge=1, description="Clipped updates on each rollout (TRL's num_ppo_epochs).")
    clip: float = Field(0.2, gt=0, description="ε of the policy ratio's clip (Schulman et al. 2017).")
    value_clip: float = Field(0.2, gt=0, description="How far one rollout's updates may move a value estimate.")
    value_coef: float = Field(0.1, ge=0, description="Weight of the value loss next to the policy loss (vf_coef).")
    gamma: float = Field(1.0, gt=0, le=1, description="Discount over answer tokens (1: the reward comes at the end).")
    lam: float = Field(0.95, ge=0, le=1, description="GAE's λ (Schulman et al. 2016).")


class RlTraining(Training):
    """SFT's knobs with online RL's defaults. ``batch_size`` counts *prompts* per optimizer step: each is answered
    ``group_size`` times, so a step trains on batch_size × group_size completions."""

    epochs: float = Field(1.0, gt=0, description="Passes over the prompts.")
    batch_size: int = Field(2, ge=1, description="Prompts per optimizer step (× group_size completions).")
    max_length: int = Field(
        512, ge=16, description="Prompt + completion tokens; prompts longer than max_length − max_completion_length "
        "are left out."
    )  # fmt: skip
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="TRL's GRPO examples warm up for 0 steps.")


class RlRecipe(StrictModel):
    """``tailor train rl RECIPE.yaml``: GRPO or RLOO against a verifiable reward, a reward model or a function."""

    name: str = Field("rl", description="Run name.")
    model: str = Field("default", description='Policy to start from: "default", a HF folder, or a hub id.')
    system: str | None = Field(
        None, description="Start from a saved System (its model and prompt; its one LoRA adapter trains on)."
    )
    algorithm: RlAlgorithm = Field(
        "grpo", description="grpo | rloo (critic-free, TRL's trainers) | ppo (a value head; ours: train/align/ppo.py)."
    )
    task: str | None = Field(None, description="A task.yaml: its train: records are the prompts and references.")
    prompts: str | None = Field(
        None, description="Instead of task: a data file of eval records (input/reference), chats or preference pairs."
    )
    limit: int | None = Field(None, ge=1, description="Train on a seeded sample of N prompts.")
    skip_invalid: bool = Field(
        False, description="prompts: leave out (and count) malformed records instead of stopping at the first."
    )
    reward: RewardSpec = Field(default_factory=RewardSpec)
    group_size: int = Field(
        4,
        ge=1,
        description="Answers sampled per prompt (TRL's num_generations). DeepSeekMath sampled 64 (Sec. 4.2); on a "
        "CPU every answer is a generation, so 4: the smallest group whose mean and spread mean something (RLOO's "
        "paper gains from k=2 to k=4, Ahmadian et al. 2024). PPO's value head is its baseline: 1 is enough there.",
    )
    beta: float | None = Field(
        None, ge=0, description="KL coefficient; None: GRPO 0.04 (DeepSeekMath), RLOO 0.05 (TRL). 0: no reference."
    )
    kl_target: float | None = Field(
        None,
        gt=0,
        description="Adaptive KL (Ziegler et al. 2019): steer beta toward this mean per-token KL (TRL's logged `kl`) "
        "after every step; None keeps beta fixed.",
    )
    kl_horizon: int = Field(
        10_000, ge=1, description="Adaptive KL: completions over which beta may move by ±20% (Ziegler: 10,000)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts (TRL, DeepSeekMath: 1.0).")
    max_completion_length: int | None = Field(
        None, ge=1, description="New tokens per rollout; None: the task's generation.max_new_tokens, else 128."
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "dapo",
        description="grpo: how token losses are averaged (TRL's default dapo: over all tokens of the batch, no "
        "length bias; grpo: per sequence, the paper's, which favours short right answers and long wrong ones).",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="grpo: divide advantages by the group's std (paper), the batch's, or not (Dr. GRPO)."
    )
    ppo: PpoSpec = Field(default_factory=PpoSpec, description="algorithm ppo: its clipping, value loss and GAE.")
    samples_per_step: int = Field(
        8, ge=1, description="Rollouts kept per step in samples.jsonl (samples.md shows start, middle and end)."
    )
    strategy: Strategy = Field(default_factory=Strategy)
    training: RlTraining = Field(default_factory=RlTraining)
    canaries: TrainingCanarySpec = Field(
        default_factory=TrainingCanarySpec,
        description="Forgetting canaries on the start and the trained weights (the alignment tax).",
    )

    @model_validator(mode="after")
    def _checks(self) -> RlRecipe:
        if (self.task is None) == (self.prompts is None):
            raise ValueError("give exactly one of task: (a task.yaml) and prompts: (a data file)")
        if self.strategy.method not in {*LORA_FAMILY, "full", "freeze"} or self.strategy.method == "qlora":
            raise ValueError(f"online RL trains with lora, dora, rslora, full or freeze, not {self.strategy.method}")
        if self.algorithm != "ppo" and self.group_size < 2:
            raise ValueError(f"{self.algorithm} compares answers to the same prompt: group_size must be at least 2")
        if self.kl_target is not None and self.beta_value == 0:
            raise ValueError("kl_target steers beta, which must start above 0 (beta: 0 drops the reference)")
        if self.reward.kind == "metric" and self.reward.metric is None and self.task is None:
            raise ValueError("reward.kind metric with prompts: needs reward.metric (there is no task to take it from)")
        return self

    @property
    def beta_value(self) -> float:
        return self.beta if self.beta is not None else BETA_DEFAULTS[self.algorithm]

    @property
    def learning_rate(self) -> float:
        if self.training.learning_rate:
            return self.training.learning_rate
        return LORA_LEARNING_RATE if self.strategy.method in LORA_FAMILY else FULL_LEARNING_RATE
