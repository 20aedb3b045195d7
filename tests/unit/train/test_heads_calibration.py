"""Temperature scaling and ECE against hand-computed values (Guo et al. 2017)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tailorlm.train.heads.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)

pytestmark = pytest.mark.unit


def test_nll_of_a_uniform_prediction_is_log_c() -> None:
    assert nll(np.zeros((3, 2)), np.array([0, 1, 0])) == pytest.approx(math.log(2))
    assert nll(np.zeros((1, 4)), np.array([3])) == pytest.approx(math.log(4))


def test_temperature_matches_the_hand_computed_optimum() -> None:
    # Four copies of logits (2, 0) with three labelled 0: the NLL is minimal where p(0) = sigmoid(2/T) = 3/4,
    # i.e. 2/T = ln 3, T = 2 / ln 3.
    logits = np.array([[2.0, 0.0]] * 4)
    labels = np.array([0, 0, 0, 1])
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2 / math.log(3), rel=1e-4)
    assert softmax(logits, t)[0, 0] == pytest.approx(0.75, rel=1e-4)


def test_temperature_undoes_a_known_overconfidence() -> None:
    # Labels drawn from softmax(z); the model reports 3z, so the fitted T is about 3 and the NLL drops.
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20000, 3))
    labels = (rng.random((len(z), 1)) > softmax(z).cumsum(axis=1)).sum(axis=1)  # one draw per row
    t = fit_temperature(3 * z, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    report = calibration_report(3 * z, labels, t)
    assert report["nll_after"] < report["nll_before"] and report["ece_after"] < report["ece_before"]


def test_temperature_keeps_the_argmax() -> None:
    logits = np.random.default_rng(1).normal(size=(50, 4))
    assert (softmax(logits, 0.3).argmax(1) == softmax(logits, 7.0).argmax(1)).all()


def test_ece_hand_computed() -> None:
    # Confidences 0.9 (right) and 0.6, 0.6 (one right): bins (13/15, 14/15] and (8/15, 9/15];
    # ECE = 1/3 * |1 - 0.9| + 2/3 * |0.5 - 0.6| = 0.1.
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    assert expected_calibration_error(probs, np.array([0, 0, 1])) == pytest.approx(0.1)
    # Perfectly confident and right: no calibration error.
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == pytest.approx(0.0)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="class ids"):
        nll(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        fit_temperature(np.zeros(3), np.array([0, 1, 0]))
