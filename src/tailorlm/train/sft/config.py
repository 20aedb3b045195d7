"""The SFT recipe: what to train (model, data), how (the parameter strategy), and the trainer's knobs.

    model: default                     # or a HF folder / hub id; or `system: path/to/system.yaml`
    data: {path: train.jsonl}          # chat (OpenAI/ShareGPT), Alpaca or text; format detected from the keys
    eval_fraction: 0.1                 # or eval_data: {path: dev.jsonl}
    strategy: {method: lora, r: 16, alpha: 32}
    training: {epochs: 3, batch_size: 4}

Every default below names its source. ``training.learning_rate: null`` picks the method's default
(``default_learning_rate``), because a LoRA learning rate destroys a fully fine-tuned model and a full
fine-tuning rate barely moves a LoRA adapter.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from tailorlm.core.config import StrictModel
from tailorlm.core.task import TrainingCanarySpec

Method = Literal[
    "lora", "dora", "rslora", "qlora", "loha", "lokr", "oft", "vera",
    "full", "freeze", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning",
]  # fmt: skip
# Every method but full and freeze trains a PEFT adapter and saves an adapter folder.
PEFT_METHODS: frozenset[str] = frozenset(get_args(Method)) - {"full", "freeze"}
# qlora is LoRA on a 4-bit base: the same adapter, only the frozen weights are quantized.
LORA_FAMILY: frozenset[str] = frozenset({"lora", "dora", "rslora", "qlora"})
PROMPT_LEARNING: frozenset[str] = frozenset({"prompt_tuning", "prefix_tuning", "p_tuning"})

# Per-method default learning rates (AdamW), with where each comes from.
DEFAULT_LEARNING_RATES: dict[str, float] = {
    # LoRA (Hu et al. 2021, Table 11: 2e-4 for GPT-2 on E2E); QLoRA (Dettmers et al. 2023) uses 2e-4 for 7B-13B.
    "lora": 2e-4,
    # rsLoRA (Kalajdzievski 2023) only rescales alpha/r → alpha/sqrt(r); it keeps LoRA's learning rates.
    "rslora": 2e-4,
    # DoRA (Liu et al. 2024, Table 8: 1e-4 to 2e-4 for LLaMA on commonsense reasoning).
    "dora": 2e-4,
    # Full fine-tuning: 1/10-1/100 of pretraining's peak (issue #6); SmolLM2 pretrained at 5e-4 → 1e-5 (1/50),
    # also the InstructGPT/Alpaca range (1e-5 to 2e-5).
    "full": 1e-5,
    "freeze": 1e-5,
    # IA3 (Liu et al. 2022, "Few-Shot PEFT is Better and Cheaper than ICL", T-Few: 3e-3).
    "ia3": 3e-3,
    # Prompt tuning (Lester et al. 2021 used 0.3 with Adafactor); 3e-2 with AdamW follows PEFT's examples.
    "prompt_tuning": 3e-2,
    # Prefix tuning (Li & Liang 2021 used 5e-5 *with* an MLP reparameterisation); PEFT's default has no MLP and its
    # examples train the raw prefix at 1e-2.
    "prefix_tuning": 1e-2,
    # P-tuning (Liu et al. 2021, "GPT Understands, Too"): virtual tokens from an MLP prompt encoder; PEFT's P-tuning
    # guide trains it with AdamW at 1e-3 (the encoder is an ordinary MLP, so prompt tuning's 3e-2 would be too hot).
    "p_tuning": 1e-3,
    # QLoRA (Dettmers et al. 2023): 2e-4 for 7B-13B (1e-4 above 33B); the adapter is LoRA's.
    "qlora": 2e-4,
    # LoHa (Hyeon-Woo et al. 2022, FedPara) and LoKr (Yeh et al. 2024, LyCORIS) reparameterise the same low-rank
    # update as LoRA (Hadamard / Kronecker products): LoRA's rate. PEFT's method comparison (MetaMathQA,
    # Llama-3.2-3B) trains both at its LoRA rate.
    "loha": 2e-4,
    "lokr": 2e-4,
    # OFT (Qiu et al. 2023) rotates the frozen weights with learned block-orthogonal matrices; PEFT's method
    # comparison (MetaMathQA, Llama-3.2-3B, OFT rank 32) trains it at 1e-4.
    "oft": 1e-4,
    # VeRA (Kopiczko et al. 2024) trains only two scaling vectors per layer over frozen random matrices, and its
    # experiments use rates about 10x their LoRA baselines'; 2e-3 is 10x our LoRA default.
    "vera": 2e-3,
}


def default_learning_rate(method: str) -> float:
    """The paper-backed learning rate for ``method`` (see ``DEFAULT_LEARNING_RATES``)."""
    return DEFAULT_LEARNING_RATES[method]


class DataSpec(StrictModel):
    """A dataset file (or folder of text files) loaded through ``tailorlm.data.load_dataset``."""

    path: str = Field(description="JSONL/JSON/CSV/Parquet file, or a folder of .txt/.md files.")
    format: Literal["openai", "alpaca", "sharegpt", "text"] | None = Field(
        None, description="Record format; None detects it from the keys (text for .txt/.md)."
    )


class Strategy(StrictModel):
    """Which parameters train. One flat block so that ``strategy.method=dora`` works as a dotted override."""

    method: Method = Field(
        "lora",
        description="lora | dora | rslora | qlora | loha | lokr | oft | vera | ia3 | prompt_tuning | prefix_tuning "
        "| p_tuning | full | freeze",
    )
    # LoRA family (Hu et al. 2021): r=16, alpha=2r is the common QLoRA-era setting; dropout 0.05 as in QLoRA.
    r: int = Field(16, ge=1, description="Rank (lora, dora, rslora, qlora, loha, lokr).")
    alpha: float = Field(32, gt=0, description="LoRA scale numerator: the update is scaled by alpha/r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input (lora family).")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Modules that get adapters: 'all-linear' (QLoRA's finding: every linear layer) or names. "
        "IA3 uses PEFT's per-architecture defaults unless names are given.",
    )
    # freeze: train only part of the base model.
    train_top_n_blocks: int | None = Field(
        None,
        ge=1,
        description="freeze: train only the last N decoder blocks. lora family: adapters in the last N blocks only, "
        "so the backward pass stops there (a speed choice for CPUs).",
    )
    trainable_modules: list[str] | None = Field(
        None, description="freeze: train only parameters whose dotted name contains one of these module names."
    )
    # prompt learning (Lester et al. 2021; Li & Liang 2021).
    num_virtual_tokens: int = Field(
        20, ge=1, description="prompt_tuning/prefix_tuning/p_tuning: learned virtual tokens."
    )

    @model_validator(mode="after")
    def _freeze_needs_a_choice(self) -> Strategy:
        freeze_fields = self.train_top_n_blocks is not None or self.trainable_modules is not None
        if self.method == "freeze" and not freeze_fields:
            raise ValueError("method 'freeze' needs train_top_n_blocks or trainable_modules")
        if self.trainable_modules is not None and self.method != "freeze":
            raise ValueError("trainable_modules only applies to method 'freeze'")
        if self.train_top_n_blocks is not None and self.method not in {"freeze", *LORA_FAMILY}:
            raise ValueError("train_top_n_blocks applies to method 'freeze' and the lora family only")
        return self


class Training(StrictModel):
    """Trainer knobs. The defaults are the LoRA paper's and TRL's unless a comment says otherwise."""

    learning_rate: float | None = Field(None, gt=0, description="Peak LR; None = the method's default.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Examples per device per optimizer step, before grad_accum.")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    # Warmup 3% and a decaying schedule as in QLoRA/Alpaca; the LoRA paper's GPT-2 runs use linear decay.
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps with linear warmup.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (LoRA paper, GPT-2: 0.01).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (transformers' default).")
    seed: int = Field(0, description="Seed for the initialisation of adapters, data order and dropout.")
    eval_steps: int = Field(50, ge=1, description="Evaluate every N steps when there is eval data.")
    save_steps: int | None = Field(
        None, ge=1, description="Checkpoint every N steps; None = eval_steps (the best checkpoint needs both)."
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (the best one is always kept).")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evaluations without a better eval loss (needs eval data)."
    )
    max_length: int = Field(1024, ge=8, description="Truncate tokenized examples to this many tokens.")
    packing: bool = Field(False, description="Pack examples into max_length rows (TRL's BFD, padding-free).")
    # Speed: bf16 where the hardware multiplies it natively, and batches of similar length (less padding).
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto: bf16 autocast on bf16 GPUs and CPUs with AVX512-BF16/AMX (PEFT methods also keep the "
        "frozen base weights in bf16), else fp32. Trained parameters and optimizer state stay fp32.",
    )
    group_by_length: bool = Field(
        True, description="Batch records of similar length together (transformers' LengthGroupedSampler)."
    )
    # Memory (train/memory.py): by default the micro-batch and checkpointing are chosen from an estimate of the
    # peak, so a run fits a laptop; the effective batch (batch_size × grad_accum) never changes.
    activation_checkpointing: bool | None = Field(
        None,
        description="Recompute activations in the backward pass: less memory, about 30% more compute. None: on "
        "only when even one row per forward pass would exceed the memory budget.",
    )
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="Rows per forward pass, a divisor of batch_size (the rest is gradient accumulation). None: "
        "chosen from the memory estimate (on a CPU, the fewest rows that keep the matmuls efficient).",
    )
    memory_limit_gb: float | None = Field(
        None, gt=0, description="Peak memory the training may plan on; None: 70% of the memory available at start."
    )
    # Curriculum (Bengio et al. 2009): easy→hard order instead of shuffling; see tailorlm.train.curriculum.
    curriculum: Literal["none", "length", "loss"] = Field(
        "none",
        description="Training order: none (shuffled, the default), length (tokens) or loss (the base model's "
        "per-record loss), easiest first.",
    )
    curriculum_reverse: bool = Field(False, description="Hardest first: the anti-curriculum ablation.")

    @model_validator(mode="after")
    def _curriculum_needs_rows(self) -> Training:
        # Packing concatenates rows with a bin-packing order of its own, which would undo the curriculum.
        if self.curriculum != "none" and self.packing:
            raise ValueError("curriculum orders whole records; it cannot be combined with packing")
        if self.curriculum_reverse and self.curriculum == "none":
            raise ValueError("curriculum_reverse needs a curriculum (length or loss)")
        return self


class SFTRecipe(StrictModel):
    """``tailor train sft RECIPE.yaml``: supervised fine-tuning with any parameter strategy."""

    name: str = Field("sft", description="Run name.")
    model: str = Field("default", description='Base model: "default", a HF folder, or a hub id.')
    system: str | None = Field(None, description="Start from a saved System instead (its model and prompt).")
    data: DataSpec = Field(description="Training data.")
    eval_data: DataSpec | None = Field(None, description="Held-out data; else eval_fraction of data is held out.")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Held out from data when eval_data is absent (0 = no evaluation)."
    )
    strategy: Strategy = Field(default_factory=Strategy)
    training: Training = Field(default_factory=Training)
    canaries: TrainingCanarySpec = Field(
        default_factory=TrainingCanarySpec,
        description="Forgetting canaries scored on the base and the trained weights; flagged beyond max_drop.",
    )

    @property
    def learning_rate(self) -> float:
        """The learning rate actually used."""
        return self.training.learning_rate or default_learning_rate(self.strategy.method)
