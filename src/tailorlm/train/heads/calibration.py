"""Calibration of a classifier's probabilities: temperature scaling, and the numbers that judge it.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", §4.2) divides every logit
vector by one scalar T > 0, fitted to minimise the negative log-likelihood on held-out data. It never changes the
argmax (accuracy is untouched), only how confident the probabilities are: T > 1 softens over-confident models.

    T = fit_temperature(logits, labels)           # logits: (N, C) held-out logits, labels: (N,) class ids
    probs = softmax(logits / T)
    expected_calibration_error(probs, labels)     # 15 equal-width confidence bins, as in Guo et al.

Pure numpy/scipy functions, tested against hand-computed values in tests/unit/train/test_heads_calibration.py.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

# T is searched on log T in [log 0.05, log 20]: wider than any temperature Guo et al. report (about 1-3).
_LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {z.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must be class ids in [0, {z.shape[1]})")
    return z, y


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (N, C), computed in log space for stability."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``, in nats."""
    z, y = _check(logits, labels)
    logp = log_softmax(z / temperature, axis=-1)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The scalar T > 0 that minimises ``nll(logits, labels, T)`` (Guo et al. 2017, §4.2).

    The NLL is smooth and unimodal in log T, so a bounded scalar search (Brent) finds it without gradients.
    """
    z, y = _check(logits, labels)
    result = minimize_scalar(
        lambda log_t: nll(z, y, float(np.exp(log_t))), bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(result.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE (Naeini et al. 2015; Guo et al. 2017, eq. 3): sum over confidence bins of |accuracy - confidence|,
    weighted by the share of examples in the bin. Confidence is the top probability; bins are equal-width on (0, 1].
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],) or p.shape[0] == 0:
        raise ValueError(f"expected probs (N, C) and labels (N,), got {p.shape} and {y.shape}")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Bin b holds confidences in (b/n, (b+1)/n]; a confidence of exactly 0 cannot occur for a probability vector.
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """NLL and ECE before (T = 1) and after temperature scaling with ``temperature``."""
    return {
        "temperature": temperature,
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels),
    }
