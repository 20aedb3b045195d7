"""Cost summaries: latency percentiles and token counts per example.

Percentiles use numpy's default linear interpolation (Hyndman & Fan 1996, definition 7, as in Excel's
PERCENTILE.INC), so the p50 of an even-sized sample is the midpoint of the two middle values. Tail percentiles of a
small eval set are rough: the p99 of 60 latencies is essentially the maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _array(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"need a non-empty list of {what}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what} must be finite and non-negative")
    return arr


def summarize_latency(latencies: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p90", "p99", "mean", "n"}`` of per-request latencies (in the caller's unit, usually seconds)."""
    arr = _array(latencies, "latencies")
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(arr.mean()), "n": int(arr.size)}


def summarize_tokens(prompt_tokens: Sequence[int], completion_tokens: Sequence[int]) -> dict[str, float]:
    """Per-example token counts → means, the completion p50/p90, and totals (what an API bill or a GPU-hour buys)."""
    prompt = _array(prompt_tokens, "prompt token counts")
    completion = _array(completion_tokens, "completion token counts")
    if prompt.size != completion.size:
        raise ValueError(f"{prompt.size} prompt counts but {completion.size} completion counts")
    p50, p90 = np.percentile(completion, [50, 90])
    return {
        "prompt_mean": float(prompt.mean()),
        "completion_mean": float(completion.mean()),
        "completion_p50": float(p50),
        "completion_p90": float(p90),
        "total_mean": float((prompt + completion).mean()),
        "prompt_total": int(prompt.sum()),
        "completion_total": int(completion.sum()),
        "n": int(prompt.size),
    }


def tokens_per_second(completion_tokens: Sequence[int], latencies: Sequence[float]) -> float:
    """Generated tokens per second of request time: total tokens / total latency (a ratio of sums, not a mean of
    ratios, so one tiny request cannot dominate)."""
    tokens = _array(completion_tokens, "completion token counts")
    seconds = _array(latencies, "latencies")
    if tokens.size != seconds.size:
        raise ValueError(f"{tokens.size} token counts but {seconds.size} latencies")
    total = float(seconds.sum())
    if total == 0:
        raise ValueError("total latency is zero")
    return float(tokens.sum()) / total
