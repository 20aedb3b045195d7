"""Supervised fine-tuning with any parameter strategy (full, freeze, LoRA family, IA3, prompt/prefix tuning)."""

from tailorlm.train.sft.config import DEFAULT_LEARNING_RATES, SFTRecipe, Strategy, Training, default_learning_rate
from tailorlm.train.sft.recipe import fit, latest_checkpoint

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "SFTRecipe",
    "Strategy",
    "Training",
    "default_learning_rate",
    "fit",
    "latest_checkpoint",
]
