"""The small statistics behind ``tailor ab report`` and the traffic report: pure functions, each with its source.

Feedback counts are small (tens of thumbs per arm) and proportions often sit near 0 or 1, where the textbook
normal interval ``p ± z·sqrt(p(1-p)/n)`` collapses to zero width or leaves [0, 1]. So proportions get the Wilson
score interval, differences of proportions Newcombe's interval built from two Wilson intervals, and the tests are
exact (Fisher, binomial) rather than asymptotic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000


def z_value(alpha: float) -> float:
    """The two-sided normal quantile: 1.959964 for ``alpha=0.05``."""
    return float(stats.norm.ppf(1 - alpha / 2))


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation quantile (numpy's default), ``q`` in [0, 1]; ``None`` for no values."""
    return float(np.quantile(np.asarray(values, dtype=float), q)) if len(values) else None


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (Wilson 1927; Agresti & Coull 1998, "Approximate is better than
    'exact' for interval estimation of binomial proportions"). ``None`` when ``n == 0``.

    centre = (p + z²/2n) / (1 + z²/n),  half-width = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)
    """
    if n == 0:
        return None
    z = z_value(alpha)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(s1: int, n1: int, s2: int, n2: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Interval for ``p1 - p2`` from the two Wilson intervals: Newcombe 1998, "Interval estimation for the
    difference between independent proportions", method 10. Unlike the Wald interval it behaves at p near 0 or 1.

    lower = d - sqrt((p1 - l1)² + (u2 - p2)²),  upper = d + sqrt((u1 - p1)² + (p2 - l2)²)
    """
    w1, w2 = wilson_interval(s1, n1, alpha), wilson_interval(s2, n2, alpha)
    if w1 is None or w2 is None:
        return None
    p1, p2 = s1 / n1, s2 / n2
    d = p1 - p2
    lower = d - math.sqrt((p1 - w1[0]) ** 2 + (w2[1] - p2) ** 2)
    upper = d + math.sqrt((w1[1] - p1) ** 2 + (p2 - w2[0]) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def fisher_p(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided Fisher exact test of ``s1/n1`` vs ``s2/n2`` (the 2×2 table up/down × arm): exact at any size,
    where the two-proportion z-test needs roughly five of each outcome per arm."""
    return float(stats.fisher_exact([[s1, n1 - s1], [s2, n2 - s2]]).pvalue)


def binomial_p(wins: int, n: int) -> float:
    """Two-sided exact binomial test of a win rate against 0.5 (ties are left out by the caller)."""
    return float(stats.binomtest(wins, n, 0.5).pvalue) if n else 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the input order.

    Sorted ascending, the i-th smallest (1-based) gets ``max over j <= i of min(1, (m - j + 1) · p_(j))``. It
    controls the family-wise error rate like Bonferroni but rejects at least as often.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def bootstrap_mean_ci(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the mean (``scipy.stats.bootstrap``, seeded: the same data always gives
    the same interval). Percentile rather than BCa: BCa is undefined when all the scores are equal, which a
    handful of 1–5 ratings often are. ``None`` below two values."""
    if len(values) < 2:
        return None
    x = np.asarray(values, dtype=float)
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=1 - alpha,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
