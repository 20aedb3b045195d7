"""Bootstrap CIs, paired bootstrap and the paired permutation test: known distributions and hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from tailorlm.eval.metrics import get_metric
from tailorlm.eval.stats import (
    bootstrap_ci,
    bootstrap_metric,
    compare_metric,
    paired_bootstrap,
    paired_permutation_test,
)

pytestmark = pytest.mark.unit


def test_constant_scores_give_zero_width_ci() -> None:
    ci = bootstrap_ci([0.5] * 20)
    # every resample of identical values has mean 0.5
    assert ci["mean"] == ci["low"] == ci["high"] == 0.5


def test_single_example() -> None:
    assert bootstrap_ci([0.7], n_resamples=10) == {"mean": 0.7, "low": 0.7, "high": 0.7}


def test_ci_contains_true_mean_of_known_distribution() -> None:
    # Bernoulli(0.7), n = 1000: standard error sqrt(.7*.3/1000) = 0.0145, so a 95% CI is about ±0.028 wide.
    x = np.random.default_rng(1).binomial(1, 0.7, size=1000)
    ci = bootstrap_ci(x, n_resamples=1000)
    assert ci["low"] < 0.7 < ci["high"]
    assert ci["low"] < ci["mean"] < ci["high"]
    assert 0.045 < ci["high"] - ci["low"] < 0.07  # 2 * 1.96 * 0.0145 = 0.057


def test_ci_coverage_is_near_nominal() -> None:
    # 200 independent samples of N(0, 1), n = 50: about 95% of the 95% CIs contain 0.
    rng = np.random.default_rng(2)
    covered = 0
    for s in range(200):
        ci = bootstrap_ci(rng.normal(size=50), n_resamples=500, seed=s)
        covered += ci["low"] <= 0 <= ci["high"]
    assert 0.88 <= covered / 200 <= 0.99


def test_determinism() -> None:
    x = np.random.default_rng(3).random(100)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)
    y = x + 0.01
    assert paired_bootstrap(x, y, seed=7) == paired_bootstrap(x, y, seed=7)
    assert paired_permutation_test(x, y, seed=7) == paired_permutation_test(x, y, seed=7)


def test_corpus_bootstrap_matches_per_example_for_a_mean() -> None:
    # A "corpus" metric that is just the mean of per-example scores must give the same interval: both paths draw
    # the same index rows from the same seed.
    scores = [float(v) for v in np.random.default_rng(4).random(30)]
    idx = [str(i) for i in range(30)]

    def mean_fn(preds: list[str], refs: list[float]) -> float:
        return float(np.mean(refs))

    a = bootstrap_ci(scores, n_resamples=200, seed=5)
    b = bootstrap_ci((idx, scores, mean_fn), n_resamples=200, seed=5)
    assert a == pytest.approx(b)


def test_paired_identical_systems() -> None:
    x = np.random.default_rng(5).random(50)
    out = paired_bootstrap(x, x)
    assert out == {"diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}
    assert paired_permutation_test(x, x) == 1.0


def test_paired_clearly_different_systems() -> None:
    rng = np.random.default_rng(6)
    a = rng.binomial(1, 0.8, size=300).astype(float)
    b = rng.binomial(1, 0.4, size=300).astype(float)
    out = paired_bootstrap(a, b)
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    assert 0 < out["low"] < out["diff"] < out["high"]
    # no resample crosses zero → p = 2 * (1 + 0) / 1001 ≈ 0.002
    assert out["p_value"] == pytest.approx(2 / 1001)
    assert paired_permutation_test(a, b, n_resamples=2000) < 0.01


def test_paired_p_value_formula_hand_checkable() -> None:
    # d = a - b = (1, 0): every resample's mean diff is 0, 0.5 or 1; P(d* <= 0) = P(both draws pick index 1) = 1/4.
    # The two-sided p = 2 * (1 + #{d* <= 0}) / (B + 1) ≈ 2 * 1/4 = 0.5.
    out = paired_bootstrap([1.0, 0.0], [0.0, 0.0], n_resamples=4000)
    assert out["diff"] == 0.5 and out["low"] == 0.0 and out["high"] == 1.0
    assert out["p_value"] == pytest.approx(0.5, abs=0.03)


def test_permutation_exact_enumeration() -> None:
    # d = (1, 1, 1): of the 2^3 = 8 sign vectors only +(1,1,1) and -(1,1,1) reach |mean| = 1 → p = 2/8.
    assert paired_permutation_test([1, 1, 1], [0, 0, 0]) == 0.25
    # d = (1, -1): |mean| = 0 for the observed data; every flip is at least as extreme → p = 1.
    assert paired_permutation_test([1, 0], [0, 1]) == 1.0


def test_permutation_sampled_agrees_with_exact() -> None:
    # n = 12 → 4096 sign vectors: exact with 10,000 resamples, sampled with 1,000; the two agree within noise.
    rng = np.random.default_rng(7)
    a, b = rng.random(12), rng.random(12)
    exact = paired_permutation_test(a, b, n_resamples=10000)
    sampled = paired_permutation_test(a, b, n_resamples=1000, seed=1)
    assert sampled == pytest.approx(exact, abs=0.05)


def test_corpus_paired_variants() -> None:
    # Accuracy as a corpus function over predictions: system A is right on all 40, B on half.
    refs = ["y"] * 40
    pa = ["y"] * 40
    pb = ["y", "n"] * 20

    def acc(preds: list[str], rs: list[str]) -> float:
        return sum(p == r for p, r in zip(preds, rs, strict=True)) / len(rs)

    out = paired_bootstrap(pa, pb, n_resamples=300, refs=refs, corpus_fn=acc)
    assert out["diff"] == 0.5 and out["p_value"] < 0.01
    assert paired_bootstrap((pa, refs, acc), (pb, refs, acc), n_resamples=300) == out  # tuple form, same result
    assert paired_permutation_test(pa, pb, n_resamples=300, refs=refs, corpus_fn=acc) < 0.01
    assert paired_permutation_test(pa, pa, n_resamples=50, refs=refs, corpus_fn=acc) == 1.0


def test_metric_helpers_dispatch_on_metric_kind() -> None:
    preds, refs = ["Paris", "Rome", "Oslo"], ["Paris", "Madrid", "Oslo"]
    em = bootstrap_metric(get_metric("exact_match"), preds, refs, n_resamples=200)
    assert em["mean"] == pytest.approx(2 / 3)
    macro = bootstrap_metric(get_metric("macro_f1"), preds, refs, n_resamples=50)
    # labels {Madrid, Oslo, Paris}; "Rome" is no label. F1: Madrid 0, Oslo 1, Paris 1 → 2/3
    assert macro["mean"] == pytest.approx(2 / 3)
    cmp = compare_metric(get_metric("chrf"), refs, preds, refs, n_resamples=50)
    assert cmp["diff"] > 0  # the references score 100 against themselves, the predictions less


def test_input_validation() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], confidence=1.5)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_sufficient_statistics_give_the_same_replicates_as_recomputing() -> None:
    from tailorlm.eval.metrics.text import SacrebleuCorpus

    refs = ["the cat sat on the mat", "a dog ran in the park", "it is raining again today", "we went home late"]
    pa = ["the cat sat on a mat", "a dog ran in a park", "it rains again today", "we went home late"]
    pb = ["a cat sat", "the dog ran", "raining today", "home late"]
    for kind in ("bleu", "chrf"):
        fast = SacrebleuCorpus(kind)  # type: ignore[arg-type]

        def slow(p: list[str], r: list[str], f: SacrebleuCorpus = fast) -> float:
            return f(p, r)  # a plain function: no stats, so the bootstrap recomputes from text

        assert fast.from_stats(fast.stats(pa, refs).sum(0)) == pytest.approx(fast(pa, refs))
        assert bootstrap_ci((pa, refs, fast), n_resamples=30) == pytest.approx(bootstrap_ci((pa, refs, slow), 30))
        assert paired_bootstrap(pa, pb, 30, refs=refs, corpus_fn=fast) == pytest.approx(
            paired_bootstrap(pa, pb, 30, refs=refs, corpus_fn=slow)
        )
        # both permutation paths draw the same swap vectors from the seed, so they count the same
        p_fast = paired_permutation_test(pa, pb, 50, refs=refs, corpus_fn=fast)
        assert p_fast == pytest.approx(paired_permutation_test(pa, pb, 50, refs=refs, corpus_fn=slow))
