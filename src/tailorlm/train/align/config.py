"""Recipes for preference training: ``tailor train reward`` and ``tailor train dpo`` (DPO, IPO, KTO, ORPO, SimPO).

    model: default
    data: {path: pairs.jsonl}          # prompt/chosen/rejected, Anthropic-HH transcripts, or KTO's binary records
    eval_fraction: 0.2                 # held-out pairs: the reported accuracy and margins come from them
    strategy: {method: lora}
    training: {epochs: 1}

The trainer knobs are SFT's (``train/sft/config.py``); what differs is the defaults each method's paper gives, kept
here with their sources, and the data: preference pairs instead of chats.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tailorlm.core.config import StrictModel
from tailorlm.core.task import TrainingCanarySpec
from tailorlm.train.sft.config import LORA_FAMILY, Strategy, Training

PreferenceFormat = Literal["preference", "hh", "binary"]


class PreferenceData(StrictModel):
    """A preference file read by ``tailorlm.data.load_dataset`` (kind ``preference``, or ``binary`` for KTO)."""

    path: str = Field(description="JSONL/JSON/CSV/Parquet of prompt/chosen/rejected, HH transcripts or binary labels.")
    format: PreferenceFormat | None = Field(None, description="None detects it from the keys.")
    limit: int | None = Field(
        None, ge=1, description="Train on a seeded sample of N records (taken after the held-out split)."
    )
    skip_invalid: bool = Field(
        False, description="Skip invalid records (counted and logged with file:line) instead of stopping on them."
    )


class RewardTraining(Training):
    """SFT's knobs with a reward model's defaults: one epoch (InstructGPT trained its RM for one epoch, Ouyang et al.
    2022, App. C.2: more overfits), and 512 tokens, the longest HH-RLHF harmless conversations' p95 on SmolLM2."""

    epochs: float = Field(1.0, gt=0, description="Passes over the pairs (InstructGPT: 1; more overfits).")
    max_length: int = Field(512, ge=8, description="Prompt + answer tokens; earlier turns are dropped to fit.")
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step (each pair is two sequences).")


class RewardRecipe(StrictModel):
    """``tailor train reward RECIPE.yaml``: a Bradley–Terry reward model (the LM backbone and a scalar head)."""

    name: str = Field("reward", description="Run name.")
    model: str = Field("default", description='Backbone: "default", a HF folder, or a hub id.')
    data: PreferenceData = Field(description="Preference pairs.")
    eval_data: PreferenceData | None = Field(None, description="Held-out pairs; else eval_fraction of data.")
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="Held out from data when eval_data is absent.")
    center_rewards: float | None = Field(
        0.01,
        ge=0,
        description="Penalty on the mean reward's square (Eisenstein et al. 2023 via TRL): keeps scores near 0 so "
        "that RL and best-of-N see comparable numbers across prompts. None turns it off.",
    )
    strategy: Strategy = Field(default_factory=Strategy)
    training: RewardTraining = Field(default_factory=RewardTraining)

    @model_validator(mode="after")
    def _methods(self) -> RewardRecipe:
        if self.strategy.method not in {*LORA_FAMILY, "full", "freeze"} or self.strategy.method == "qlora":
            raise ValueError(
                f"a reward model trains with lora, dora, rslora, full or freeze, not {self.strategy.method}"
            )
        return self

    @property
    def learning_rate(self) -> float:
        # LoRA: 1e-4, TRL's reward-modeling example with PEFT; full: 1e-5 (InstructGPT's RM used 9e-6, Llama 2's
        # 1e-5 for the 70B's smaller siblings, Touvron et al. 2023 §3.2.2).
        if self.training.learning_rate:
            return self.training.learning_rate
        return 1e-4 if self.strategy.method in LORA_FAMILY else 1e-5


DpoMethod = Literal["dpo", "ipo", "hinge", "kto", "orpo", "simpo"]

# Each method's defaults from its paper (or, where the paper is silent, TRL's), as (beta, full lr, LoRA lr).
# LoRA rates are 10x the full ones, the usual ratio (the alignment handbook's zephyr-7b DPO: 5e-7 full, 5e-6 QLoRA).
METHOD_DEFAULTS: dict[str, tuple[float, float, float]] = {
    # DPO (Rafailov et al. 2023 §6: beta 0.1); Zephyr (Tunstall et al. 2023): 5e-7 full.
    "dpo": (0.1, 5e-7, 5e-6),
    # IPO (Azar et al. 2023): tau is the regulariser; 0.1 is TRL's default, the paper sweeps it without a winner.
    "ipo": (0.1, 5e-7, 5e-6),
    # SLiC-HF's hinge (Zhao et al. 2023) as TRL implements it: beta is 1/delta, the margin.
    "hinge": (0.1, 5e-7, 5e-6),
    # KTO (Ethayarajh et al. 2024 §4: beta 0.1, lambda_D = lambda_U = 1; 5e-7 for full, as for DPO).
    "kto": (0.1, 5e-7, 5e-6),
    # ORPO (Hong et al. 2024 §6.1: lambda 0.1, lr 8e-6 for Mistral-7B full); no reference model.
    "orpo": (0.1, 8e-6, 8e-5),
    # SimPO (Meng et al. 2024, Table 7: beta 2.0-2.5 and gamma/beta 0.5 for Mistral; lr 3e-7 to 1e-6); no reference.
    "simpo": (2.0, 5e-7, 5e-6),
}
REFERENCE_FREE = frozenset({"orpo", "simpo"})


class DpoTraining(Training):
    """SFT's knobs with the preference methods' defaults: one epoch (Zephyr: 1-3; small data overfits fast)."""

    epochs: float = Field(1.0, gt=0, description="Passes over the pairs.")
    max_length: int = Field(512, ge=8, description="Prompt + answer tokens; earlier turns are dropped to fit.")
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("cosine")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Zephyr's DPO warmup: 10% of steps.")


class DpoRecipe(StrictModel):
    """``tailor train dpo RECIPE.yaml``: preference optimization without a reward model."""

    name: str = Field("dpo", description="Run name.")
    model: str = Field("default", description='Policy to start from: "default", a HF folder, or a hub id.')
    system: str | None = Field(None, description="Start from a saved System (its model, adapters merged, prompt).")
    method: DpoMethod = Field("dpo", description="dpo | ipo | hinge | kto | orpo | simpo.")
    beta: float | None = Field(
        None, gt=0, description="The method's beta (tau for IPO, lambda for ORPO); None: paper."
    )
    gamma_beta_ratio: float = Field(0.5, ge=0, description="SimPO's target margin over beta (paper: 0.5).")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="dpo: robust DPO's label-flip rate (Chowdhury 2024)."
    )
    desirable_weight: float = Field(1.0, gt=0, description="kto: lambda_D (raise it when good answers are rarer).")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: lambda_U.")
    precompute_ref: bool = Field(
        True,
        description="Score the pairs under the reference once before training, so no step runs the reference "
        "(on a CPU a third of the step time). Off for methods without a reference.",
    )
    kl_samples: int = Field(
        32,
        ge=0,
        description="Held-out prompts on which KL(policy ‖ reference) is estimated from sampled answers (LoRA; "
        "0 skips it).",
    )
    data: PreferenceData = Field(description="Preference pairs (binary records for kto).")
    eval_data: PreferenceData | None = Field(None, description="Held-out pairs; else eval_fraction of data.")
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="Held out from data when eval_data is absent.")
    strategy: Strategy = Field(default_factory=Strategy)
    training: DpoTraining = Field(default_factory=DpoTraining)
    canaries: TrainingCanarySpec = Field(
        default_factory=TrainingCanarySpec,
        description="Forgetting canaries on the start and the trained weights (the alignment tax).",
    )

    @model_validator(mode="after")
    def _methods(self) -> DpoRecipe:
        if self.strategy.method not in {*LORA_FAMILY, "full", "freeze"} or self.strategy.method == "qlora":
            raise ValueError(
                f"preference training uses lora, dora, rslora, full or freeze, not {self.strategy.method}"
            )
        return self

    @property
    def beta_value(self) -> float:
        return self.beta if self.beta is not None else METHOD_DEFAULTS[self.method][0]

    @property
    def learning_rate(self) -> float:
        if self.training.learning_rate:
            return self.training.learning_rate
        _, full, lora = METHOD_DEFAULTS[self.method]
        return lora if self.strategy.method in LORA_FAMILY else full
