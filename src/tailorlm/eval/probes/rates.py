"""A rate with its confidence interval: how often an answer changed, how often a System refused.

These are binomial proportions, and often extreme ones (0 changes in 30, 98 refusals in 100). The percentile
bootstrap of :mod:`tailorlm.eval.stats` collapses to ``[0, 0]`` when no event was seen, which reads as certainty;
the Wilson score interval (Wilson 1927, "Probable Inference, the Law of Succession, and Statistical Inference",
JASA 22) stays honest there: 0 of 30 gives about [0, 0.11]. Brown, Cai and DasGupta (2001, "Interval Estimation for
a Binomial Proportion", Statistical Science 16) recommend it for small n.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from pydantic import BaseModel


class Rate(BaseModel):
    """``k`` events in ``n`` trials: ``value = k / n`` with a Wilson interval ``[low, high]``."""

    k: int
    n: int
    value: float
    low: float
    high: float


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``.

        centre = (p + z²/2n) / (1 + z²/n),   half = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)

    with ``p = k/n`` and ``z`` the two-sided normal quantile (1.96 at 95%). ``n == 0`` gives ``(0, 1)``: no data,
    no information.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clamp the round-off at the ends: 0 events must give exactly 0 as the lower bound.
    return max(0.0, centre - half) if k else 0.0, min(1.0, centre + half) if k < n else 1.0


def rate(k: int, n: int, confidence: float = 0.95) -> Rate:
    low, high = wilson_interval(k, n, confidence)
    return Rate(k=k, n=n, value=k / n if n else 0.0, low=low, high=high)
