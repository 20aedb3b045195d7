"""Continued pretraining (domain adaptation) on folders of raw text, packed without cross-document attention."""

from tailorlm.train.pretrain.config import PretrainRecipe, PretrainStrategy, PretrainTraining, TextSource
from tailorlm.train.pretrain.recipe import fit

__all__ = ["PretrainRecipe", "PretrainStrategy", "PretrainTraining", "TextSource", "fit"]
