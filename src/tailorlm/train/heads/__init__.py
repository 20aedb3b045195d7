"""Task-specific heads: classification and regression on the LM backbone (``tailor train classify``).

``config.py`` (the recipe), ``data.py`` (texts and labels), ``calibration.py`` (temperature scaling, ECE),
``recipe.py`` (``fit``: data → model + strategy → Trainer → calibration → System). See docs/heads.md.
"""

from tailorlm.train.heads.calibration import expected_calibration_error, fit_temperature, nll
from tailorlm.train.heads.config import HEAD_LEARNING_RATES, HEAD_METHODS, HeadData, HeadRecipe, HeadTraining
from tailorlm.train.heads.recipe import fit

__all__ = [
    "HEAD_LEARNING_RATES",
    "HEAD_METHODS",
    "HeadData",
    "HeadRecipe",
    "HeadTraining",
    "expected_calibration_error",
    "fit",
    "fit_temperature",
    "nll",
]
