"""Confidence intervals and significance tests for eval scores. Seeded and deterministic.

Every function takes the examples as the unit of resampling: an eval set is a sample of the user's traffic, and the
question is how much a score would move on another sample of the same size.

- :func:`bootstrap_ci`: percentile bootstrap interval (Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
  ch. 13). Per-example means are vectorised with an index matrix; corpus metrics (BLEU, macro-F1) are recomputed
  on each resample.
- :func:`paired_bootstrap`: difference of two systems on the same examples, both resampled with the same indices
  (Koehn 2004, "Statistical Significance Tests for Machine Translation Evaluation").
- :func:`paired_permutation_test`: approximate randomization by swapping the two systems' outputs per example
  (Noreen 1989; Riezler & Maxwell 2005, "On Some Pitfalls in Automatic Evaluation and Significance Testing for MT");
  exact when all 2^n swaps fit in the budget. Dror et al. 2018, "The Hitchhiker's Guide to Testing Statistical
  Significance in NLP", compares the two tests.

Randomness comes only from ``numpy.random.default_rng(seed)``; the same inputs and seed give the same output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from tailorlm.eval.metrics import Metric, Reference

CorpusFn = Callable[[list[str], list[Any]], float]
CorpusData = tuple[Sequence[str], Sequence[Any], CorpusFn]


@runtime_checkable
class SufficientStats(Protocol):
    """A corpus function whose score depends only on per-example counts summed over the corpus (BLEU, chrF).

    The bootstrap then sums rows of a count matrix instead of recomputing the metric from text: same replicates,
    orders of magnitude faster. ``tailorlm.eval.metrics.text.SacrebleuCorpus`` implements it.
    """

    def __call__(self, preds: list[str], refs: list[Any]) -> float: ...

    def stats(self, preds: list[str], refs: list[Any]) -> np.ndarray: ...

    def from_stats(self, total: np.ndarray) -> float: ...


# Index matrices are drawn in chunks of at most this many cells (32 MiB of int64), so 10,000 resamples of a
# 100,000-example set do not need 8 GB at once. The chunk size depends only on n, so results do not depend on it.
_CHUNK_CELLS = 1 << 22


def _scores(values: Sequence[float] | np.ndarray, what: str = "scores") -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-d sequence")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contain NaN or infinity")
    return arr


def _check_resampling(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _index_chunks(rng: np.random.Generator, n: int, n_resamples: int) -> Iterator[np.ndarray]:
    """Yield (rows, n) matrices of indices drawn with replacement, n_resamples rows in all."""
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n))


def _bootstrap_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    # x[idx] has shape (rows, n): one resample per row; its row means are the bootstrap replicates.
    return np.concatenate([x[idx].mean(axis=1) for idx in _index_chunks(rng, x.size, n_resamples)])


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _is_corpus(data: Any) -> bool:
    return isinstance(data, tuple) and len(data) == 3 and callable(data[2])


def bootstrap_ci(
    data: Sequence[float] | np.ndarray | CorpusData,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile-bootstrap confidence interval of a score: ``{"mean", "low", "high"}``.

    ``data`` is either the per-example scores (the score is their mean), or ``(predictions, references,
    corpus_fn)`` for a corpus metric (the score is ``corpus_fn(predictions, references)``). ``mean`` is the score on
    the full data, not the mean of the replicates. ``low``/``high`` are the (1-confidence)/2 and (1+confidence)/2
    quantiles of the ``n_resamples`` replicates, each computed on n examples drawn with replacement.
    """
    _check_resampling(n_resamples, confidence)
    rng = np.random.default_rng(seed)
    if _is_corpus(data):
        preds, refs, fn = data  # type: ignore[misc]
        point, replicates = _corpus_replicates(list(preds), list(refs), fn, n_resamples, rng)
    else:
        x = _scores(data)  # type: ignore[arg-type]
        point, replicates = float(x.mean()), _bootstrap_means(x, n_resamples, rng)
    low, high = _percentiles(replicates, confidence)
    return {"mean": point, "low": low, "high": high}


def _corpus_replicates(
    preds: list[str], refs: list[Any], fn: CorpusFn, n_resamples: int, rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    if len(preds) != len(refs) or not preds:
        raise ValueError(f"need as many predictions as references, and at least one ({len(preds)}, {len(refs)})")
    point = float(fn(preds, refs))
    if isinstance(fn, SufficientStats):
        stats = fn.stats(preds, refs)
        reps = [
            fn.from_stats(total) for idx in _index_chunks(rng, len(preds), n_resamples) for total in _sums(stats, idx)
        ]
    else:
        reps = [
            fn([preds[i] for i in row], [refs[i] for i in row])
            for idx in _index_chunks(rng, len(preds), n_resamples)
            for row in idx
        ]
    return point, np.asarray(reps, dtype=float)


def _sums(stats: np.ndarray, idx: np.ndarray) -> Iterator[np.ndarray]:
    """Column sums of ``stats[row]`` for each index row: the statistics of each resampled corpus, shape (k,)."""
    n, k = stats.shape
    # stats[idx] has shape (rows, n, k): bound it to _CHUNK_CELLS cells by summing a few rows at a time.
    step = max(1, _CHUNK_CELLS // (n * k))
    for start in range(0, len(idx), step):
        yield from stats[idx[start : start + step]].sum(axis=1)


def _two_sided_p(diffs: np.ndarray) -> float:
    # Share of resamples on each side of zero, the smaller side doubled; +1 in numerator and denominator counts the
    # observed data as one resample (Davison & Hinkley 1997, eq. 4.11) so p is never exactly 0.
    below = int(np.count_nonzero(diffs <= 0))
    above = int(np.count_nonzero(diffs >= 0))
    return min(1.0, 2 * (1 + min(below, above)) / (diffs.size + 1))


def paired_bootstrap(
    a: Sequence[float] | Sequence[str] | np.ndarray | CorpusData,
    b: Sequence[float] | Sequence[str] | np.ndarray | CorpusData,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    refs: Sequence[Any] | None = None,
    corpus_fn: CorpusFn | None = None,
) -> dict[str, float]:
    """Paired bootstrap of system A minus system B on the same examples: ``{"diff", "low", "high", "p_value"}``.

    ``a``/``b`` are per-example scores; or the two systems' predictions with ``refs=`` and ``corpus_fn=``; or, as in
    :func:`bootstrap_ci`, ``(predictions, references, corpus_fn)`` tuples sharing references and function. Each
    resample draws one index vector and applies it to both systems, so the difference keeps the pairing (Koehn 2004).
    ``diff`` is the observed difference, ``low``/``high`` the percentile interval of the B resampled differences
    d*_1..d*_B, and the two-sided p-value is

        p = min(1, 2 * (1 + min(#{d*_i <= 0}, #{d*_i >= 0})) / (B + 1))

    i.e. twice the (smoothed) fraction of resampled differences that reach or cross zero against the observed sign.
    Identical systems give d* = 0 everywhere and p = 1. With B = 1000 the smallest p is about 0.002.
    """
    _check_resampling(n_resamples, confidence)
    rng = np.random.default_rng(seed)
    if _is_corpus(a) and _is_corpus(b):
        a, refs, corpus_fn = a  # type: ignore[misc]
        b, refs_b, _ = b  # type: ignore[misc]
        # The pairing is over examples: both systems must be scored against the same references, in order.
        if list(refs_b) != list(refs):
            raise ValueError("paired corpus tuples must share the same references")
    if corpus_fn is not None:
        if refs is None:
            raise ValueError("the corpus variant needs refs")
        pa, pb, rs = list(a), list(b), list(refs)
        if not (len(pa) == len(pb) == len(rs)) or not rs:
            raise ValueError(f"systems and references differ in length ({len(pa)}, {len(pb)}, {len(rs)})")
        observed = float(corpus_fn(pa, rs) - corpus_fn(pb, rs))  # type: ignore[arg-type]
        diffs_list = []
        if isinstance(corpus_fn, SufficientStats):
            sa, sb = corpus_fn.stats(pa, rs), corpus_fn.stats(pb, rs)  # type: ignore[arg-type]
            for idx in _index_chunks(rng, len(rs), n_resamples):
                for ta, tb in zip(_sums(sa, idx), _sums(sb, idx), strict=True):
                    diffs_list.append(corpus_fn.from_stats(ta) - corpus_fn.from_stats(tb))
        else:
            for idx in _index_chunks(rng, len(rs), n_resamples):
                for row in idx:
                    r = [rs[i] for i in row]
                    diffs_list.append(corpus_fn([pa[i] for i in row], r) - corpus_fn([pb[i] for i in row], r))
        diffs = np.asarray(diffs_list, dtype=float)
    else:
        xa, xb = _scores(a, "scores_a"), _scores(b, "scores_b")  # type: ignore[arg-type]
        if xa.size != xb.size:
            raise ValueError(f"paired scores differ in length ({xa.size} vs {xb.size})")
        d = xa - xb  # mean(a[idx]) - mean(b[idx]) == mean(d[idx]): resampling d keeps the pairing
        observed, diffs = float(d.mean()), _bootstrap_means(d, n_resamples, rng)
    low, high = _percentiles(diffs, confidence)
    return {"diff": observed, "low": low, "high": high, "p_value": _two_sided_p(diffs)}


def paired_permutation_test(
    a: Sequence[float] | Sequence[str] | np.ndarray,
    b: Sequence[float] | Sequence[str] | np.ndarray,
    n_resamples: int = 10000,
    seed: int = 0,
    *,
    refs: Sequence[Any] | None = None,
    corpus_fn: CorpusFn | None = None,
) -> float:
    """Two-sided p-value of "A and B score the same", by approximate randomization (paired permutation test).

    Under the null the two systems are exchangeable on each example, so each example's pair of outputs may be
    swapped. For per-example scores a swap flips the sign of d_i = a_i - b_i, and the statistic is |mean(d)|:

        p = (1 + #{k : |mean(s_k * d)| >= |mean(d)|}) / (K + 1),   s_k uniform in {-1, +1}^n

    When 2^n <= ``n_resamples`` every sign vector is enumerated instead and p = #{...} / 2^n exactly (for n = 3 and
    d = (1, 1, 1): only s = ±(1, 1, 1) reach |mean| = 1, so p = 2/8). With ``refs`` and ``corpus_fn``, ``a``/``b``
    are predictions and each permutation swaps them per example, then recomputes |metric(A') - metric(B')|.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    if corpus_fn is not None:
        return _corpus_permutation(list(a), list(b), refs, corpus_fn, n_resamples, rng)  # type: ignore[arg-type]
    xa, xb = _scores(a, "scores_a"), _scores(b, "scores_b")  # type: ignore[arg-type]
    if xa.size != xb.size:
        raise ValueError(f"paired scores differ in length ({xa.size} vs {xb.size})")
    d = xa - xb
    n = d.size
    observed = abs(d.mean())
    # Ties count as "at least as extreme"; the slack absorbs float round-off in the permuted sums.
    threshold = observed - 1e-9 * float(np.abs(d).mean())
    if n < 63 and 2**n <= n_resamples:
        # Row k's sign vector is the binary expansion of k: all 2^n swaps, each once.
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        return float(np.count_nonzero(np.abs(signs @ d) / n >= threshold)) / 2**n
    rows = max(1, _CHUNK_CELLS // n)
    count = 0
    for start in range(0, n_resamples, rows):
        signs = rng.integers(0, 2, size=(min(rows, n_resamples - start), n)) * 2 - 1
        count += int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
    return (1 + count) / (n_resamples + 1)


def _corpus_permutation(
    pa: list[str], pb: list[str], refs: Sequence[Any] | None, fn: CorpusFn, n_resamples: int, rng: np.random.Generator
) -> float:
    if refs is None:
        raise ValueError("the corpus variant needs refs")
    rs = list(refs)
    if not (len(pa) == len(pb) == len(rs)) or not rs:
        raise ValueError(f"systems and references differ in length ({len(pa)}, {len(pb)}, {len(rs)})")
    observed = abs(fn(pa, rs) - fn(pb, rs))
    slack = 1e-9 * max(1.0, observed)
    count = 0
    if isinstance(fn, SufficientStats):
        sa, sb = fn.stats(pa, rs), fn.stats(pb, rs)
        delta = sb - sa  # swapping example i moves delta[i] from A's totals to B's
        for _ in range(n_resamples):
            swap = rng.integers(0, 2, size=len(rs))
            moved = swap @ delta
            count += abs(fn.from_stats(sa.sum(0) + moved) - fn.from_stats(sb.sum(0) - moved)) >= observed - slack
        return (1 + count) / (n_resamples + 1)
    for _ in range(n_resamples):
        swap = rng.integers(0, 2, size=len(rs)).astype(bool)
        a2 = [y if s else x for x, y, s in zip(pa, pb, swap, strict=True)]
        b2 = [x if s else y for x, y, s in zip(pa, pb, swap, strict=True)]
        count += abs(fn(a2, rs) - fn(b2, rs)) >= observed - slack
    return (1 + count) / (n_resamples + 1)


def bootstrap_metric(
    metric: Metric,
    predictions: Sequence[str],
    references: Sequence[Reference],
    examples: Sequence[Mapping[str, Any]] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`bootstrap_ci` of a registry metric: per-example scores when it has them, else the corpus function."""
    if metric.per_example is not None:
        return bootstrap_ci(metric.scores(predictions, references, examples), n_resamples, confidence, seed)
    metric.score(predictions, references, examples)  # validates the inputs with a clear error before resampling
    return bootstrap_ci((list(predictions), list(references), metric.corpus), n_resamples, confidence, seed)  # type: ignore[arg-type]


def compare_metric(
    metric: Metric,
    predictions_a: Sequence[str],
    predictions_b: Sequence[str],
    references: Sequence[Reference],
    examples: Sequence[Mapping[str, Any]] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`paired_bootstrap` of system A minus system B under a registry metric, on the same examples."""
    if metric.per_example is not None:
        sa = metric.scores(predictions_a, references, examples)
        sb = metric.scores(predictions_b, references, examples)
        return paired_bootstrap(sa, sb, n_resamples, confidence, seed)
    return paired_bootstrap(
        list(predictions_a),
        list(predictions_b),
        n_resamples,
        confidence,
        seed,
        refs=list(references),
        corpus_fn=metric.corpus,
    )
