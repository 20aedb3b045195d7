"""The continued-pretraining recipe: which text (a folder of documents), which model, how, and the trainer's knobs.

    model: default                                  # or a HF folder / hub id; or `system: path/to/system.yaml`
    data: {path: corpus/, include: ["**/*.md"], exclude: ["drafts/**"]}
    eval_fraction: 0.1                              # of documents, or eval_data: {path: held-out/}
    strategy: {method: lora, r: 64, alpha: 128}
    training: {max_length: 512, epochs: 1}

The text is read with the RAG document readers (txt, md, html, pdf, docx, jsonl, json, csv, tsv), each document
is followed by EOS, and documents are packed into ``max_length`` blocks whose position ids restart at every
document, so no token attends across a document boundary. The strategy and trainer knobs are SFT's
(``tailorlm.train.sft.config``) with defaults for domain adaptation; docs/pretraining.md gives their sources.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tailorlm.core.config import StrictModel
from tailorlm.core.task import TrainingCanarySpec
from tailorlm.train.sft.config import PROMPT_LEARNING, Strategy, Training, default_learning_rate


class TextSource(StrictModel):
    """A file or folder of documents, read with ``tailorlm.rag.readers`` (one document per file or record)."""

    path: str = Field(description="A document file, or a folder walked recursively (sorted, hidden files skipped).")
    include: list[str] = Field(
        default_factory=lambda: ["**/*"], description="Gitignore-style globs, relative to the folder, to read."
    )
    exclude: list[str] = Field(default_factory=list, description="Globs to leave out, e.g. ['drafts/**', '*.csv'].")
    text_field: str = Field("text", description="JSONL/JSON/CSV/TSV: the field that holds a record's text.")
    skip_unreadable: bool = Field(
        False,
        description="Train on the readable files and log the others. Off by default: a file that silently drops "
        "out of a training corpus is a bug you never see.",
    )


class PretrainStrategy(Strategy):
    """SFT's strategies with a higher LoRA rank: continued pretraining learns more than an instruction tune does.

    Biderman et al. 2024 ("LoRA Learns Less and Forgets Less"): on continued pretraining, LoRA's gap to full
    fine-tuning shrinks as the rank grows (they go up to r=256) and alpha = 2r works; r=64 is a middle ground that
    still trains in seconds per step on a CPU. Prompt and prefix tuning are refused: their virtual tokens are
    prepended once per row, and a packed row holds many documents.
    """

    r: int = Field(64, ge=1, description="LoRA rank (lora, dora, rslora); higher than SFT's 16.")
    alpha: float = Field(128, gt=0, description="LoRA scale numerator: alpha = 2r (Biderman et al. 2024).")

    @model_validator(mode="after")
    def _no_virtual_tokens(self) -> PretrainStrategy:
        if self.method in PROMPT_LEARNING:
            raise ValueError(
                f"method '{self.method}' prepends virtual tokens to a row, but a packed row holds several documents; "
                "use lora, dora, rslora, ia3, full or freeze"
            )
        return self


class PretrainTraining(Training):
    """SFT's trainer knobs with pretraining defaults (one pass, cosine decay, 512-token blocks)."""

    epochs: float = Field(1.0, gt=0, description="Passes over the text (Muennighoff et al. 2023: up to ~4 help).")
    # Gupta et al. 2023 and Ibrahim et al. 2024 ("continual pre-training"): re-warm, then re-decay with cosine.
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("cosine")
    max_length: int = Field(512, ge=8, description="Block length in tokens (SmolLM2 pretrained at 2048; CPU: 512).")
    packing: Literal[True] = Field(True, description="Always on: documents are packed into max_length blocks.")


class PretrainRecipe(StrictModel):
    """``tailor train pretrain RECIPE.yaml``: continued pretraining (domain adaptation) on raw text."""

    name: str = Field("pretrain", description="Run name.")
    model: str = Field("default", description='Base model: "default", a HF folder, or a hub id.')
    system: str | None = Field(None, description="Start from a saved System instead (its model and prompt).")
    data: TextSource = Field(description="Domain text to train on.")
    eval_data: TextSource | None = Field(None, description="Held-out text; else eval_fraction of documents.")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Documents held out of data when eval_data is absent (0 = no perplexity)."
    )
    strategy: PretrainStrategy = Field(default_factory=PretrainStrategy)
    training: PretrainTraining = Field(default_factory=PretrainTraining)
    canaries: TrainingCanarySpec = Field(
        default_factory=TrainingCanarySpec,
        description="Forgetting canaries scored on the base and the trained weights; flagged beyond max_drop.",
    )

    @property
    def learning_rate(self) -> float:
        """The learning rate actually used: the recipe's, or SFT's per-method default (docs/pretraining.md)."""
        return self.training.learning_rate or default_learning_rate(self.strategy.method)
