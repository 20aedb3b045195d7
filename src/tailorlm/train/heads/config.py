"""The head recipe: a classification or regression head on the LM backbone, and how to train it.

    model: default                                  # or a HF folder / hub id
    problem: classification                         # or regression (one number per text)
    labels: [negative, positive]                    # class names in id order; inferred from the data when absent
    data: {path: train.tsv, columns: [text, label]} # JSONL/JSON/CSV/TSV/Parquet with a text and a label field
    eval_data: {path: dev.tsv, columns: [text, label]}   # or eval_fraction: 0.1
    strategy: {method: lora, r: 16, alpha: 32}      # sft's Strategy: lora | dora | rslora | ia3 | full | freeze
    training: {epochs: 1, batch_size: 16, max_length: 64}

Every default names its source. ``training.learning_rate: null`` picks the method's default (``HEAD_LEARNING_RATES``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tailorlm.core.config import StrictModel
from tailorlm.train.sft.config import Strategy

Problem = Literal["classification", "regression"]

# Classification heads train the LoRA family, IA3 (all via PEFT with task_type SEQ_CLS, which also trains and saves
# the new `score` head through modules_to_save), full and freeze. Prompt learning would prepend virtual tokens that
# PEFT's sequence-classification wrapper feeds as embeddings, and the other adapters are untested here.
HEAD_METHODS: frozenset[str] = frozenset({"lora", "dora", "rslora", "ia3", "full", "freeze"})

# Per-method default learning rates (AdamW). Classification fine-tuning of a ~100M-parameter model:
HEAD_LEARNING_RATES: dict[str, float] = {
    # LoRA (Hu et al. 2021, Table 9): RoBERTa-base on SST-2 with r=8 at 5e-4; DoRA/rsLoRA keep LoRA's rates.
    "lora": 5e-4,
    "dora": 5e-4,
    "rslora": 5e-4,
    # IA3 (Liu et al. 2022, T-Few): 3e-3.
    "ia3": 3e-3,
    # Full fine-tuning on GLUE: RoBERTa (Liu et al. 2019) and BERT search 1e-5 to 3e-5; 2e-5 is the middle.
    "full": 2e-5,
    "freeze": 2e-5,
}


class HeadData(StrictModel):
    """A file of texts and labels: JSONL/JSON/CSV/TSV/Parquet, loaded through ``tailorlm.data``."""

    path: str = Field(description="Data file.")
    text_field: str = Field("text", description="Column holding the input text.")
    label_field: str = Field("label", description="Column holding the label (a class name, a class id, or a number).")
    columns: list[str] | None = Field(
        None, description="Column names of a CSV/TSV file without a header row, e.g. [text, label] for SST-2."
    )
    limit: int | None = Field(None, ge=1, description="Keep a seeded random sample of this many records.")


class HeadTraining(StrictModel):
    """Trainer knobs. Defaults from the LoRA paper's GLUE runs (Hu et al. 2021, Table 9) unless a comment says."""

    learning_rate: float | None = Field(None, gt=0, description="Peak LR; None = the method's default.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Examples per forward pass (LoRA paper, RoBERTa-base: 16).")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    # LoRA paper GLUE runs: warmup ratio 0.06 and linear decay.
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Fraction of steps with linear warmup.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (transformers' default).")
    max_length: int = Field(128, ge=4, description="Inputs are cut to this many tokens (SST-2 sentences fit in 64).")
    eval_steps: int | None = Field(
        None, ge=1, description="Also log the eval loss every N steps (the final evaluation always runs)."
    )
    # The same switch as SFT's (models/device.training_bf16): bf16 only where it is native, so auto is never slower.
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="bf16 autocast: auto (where the hardware has native bf16), bf16, or fp32."
    )
    seed: int = Field(0, description="Seed for the head's initialisation, adapters, data order and dropout.")


class HeadRecipe(StrictModel):
    """``tailor train classify RECIPE.yaml``: a classification or regression head with any parameter strategy."""

    name: str = Field("classify", description="Run name.")
    model: str = Field("default", description='Backbone: "default", a HF folder, or a hub id.')
    problem: Problem = Field("classification", description="classification (labels) or regression (a number).")
    labels: list[str] | None = Field(
        None,
        description="Class names in id order: integer labels in the data are ids into this list, names must be in "
        "it. None infers them from the training data (sorted).",
    )
    data: HeadData = Field(description="Training data.")
    eval_data: HeadData | None = Field(None, description="Held-out data; else eval_fraction of data is held out.")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Held out from data when eval_data is absent.")
    calibrate: bool = Field(
        True, description="Fit temperature scaling on the held-out logits (classification; Guo et al. 2017)."
    )
    strategy: Strategy = Field(default_factory=Strategy)
    training: HeadTraining = Field(default_factory=HeadTraining)

    @field_validator("labels")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (len(v) < 2 or len(set(v)) != len(v)):
            raise ValueError("labels must name at least two distinct classes")
        return v

    @model_validator(mode="after")
    def _supported(self) -> HeadRecipe:
        if self.strategy.method not in HEAD_METHODS:
            raise ValueError(
                f"strategy.method {self.strategy.method!r} is not supported for heads; use one of "
                f"{', '.join(sorted(HEAD_METHODS))}"
            )
        if self.problem == "regression" and self.labels is not None:
            raise ValueError("labels are for classification; a regression head predicts one number")
        return self

    @property
    def learning_rate(self) -> float:
        """The learning rate actually used."""
        return self.training.learning_rate or HEAD_LEARNING_RATES[self.strategy.method]
