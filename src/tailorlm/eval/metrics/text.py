"""Generation metrics: corpus BLEU and chrF (sacrebleu), per-example ROUGE (rouge-score), and perplexity.

References:
- BLEU: Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation"; computed by
  sacrebleu (Post 2018, "A Call for Clarity in Reporting BLEU Scores") with its defaults (13a tokenizer, exp
  smoothing), so numbers match ``sacrebleu`` on the command line. Scale 0-100, as sacrebleu reports it.
- chrF: Popović 2015, "chrF: character n-gram F-score for automatic MT evaluation"; sacrebleu defaults (char
  order 6, beta 2, no word n-grams). Scale 0-100.
- ROUGE: Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"; Google's ``rouge-score`` package with
  the Porter stemmer. F-measure per example, best over the references, averaged. Scale 0-1. Its default tokenizer
  keeps only ``[a-z0-9]``, so ROUGE is meaningless for non-Latin scripts.

sacrebleu and rouge-score are imported inside the functions: importing ``tailorlm.eval`` must stay cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np

RougeType = Literal["rouge1", "rouge2", "rougeL"]
SacreKind = Literal["bleu", "chrf"]
ROUGE_TYPES: tuple[RougeType, ...] = ("rouge1", "rouge2", "rougeL")


RefsIn = Sequence[str | Sequence[str] | None]


def _ref_streams(refs: RefsIn) -> list[list[str | None]]:
    """Per-example references → sacrebleu's reference streams (stream k holds every example's k-th reference).

    Examples with fewer references are padded with ``None``, which sacrebleu reads as "no reference here".
    """
    per_example = [[r] if isinstance(r, str) else list(r or []) for r in refs]
    if any(not r for r in per_example):
        raise ValueError("every example needs at least one reference")
    width = max(len(r) for r in per_example)
    return [[r[k] if k < len(r) else None for r in per_example] for k in range(width)]


def _check(preds: Sequence[str], refs: Sequence[Any]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise ValueError("no examples to score")


_bleu_calls = 0


def _sacrebleu_metric(kind: SacreKind) -> Any:
    import sacrebleu

    if kind == "chrf":
        return sacrebleu.CHRF()
    global _bleu_calls
    # sacrebleu warns when the text looks tokenized ("word ."). ``force`` only silences that warning (the score is
    # the same), so let it speak on the first call and not on each of a bootstrap's thousand resamples.
    force = _bleu_calls > 0
    _bleu_calls += 1
    return sacrebleu.BLEU(force=force)


@lru_cache(maxsize=2)
def _score_from_stats_metric(kind: SacreKind) -> Any:
    import sacrebleu

    return sacrebleu.BLEU(force=True) if kind == "bleu" else sacrebleu.CHRF()


class SacrebleuCorpus:
    """BLEU or chrF as a corpus function that also exposes its additive sufficient statistics.

    Both scores are a function of per-segment counts summed over the corpus (BLEU: hypothesis/reference lengths and
    matched/total n-grams per order; chrF: matched/hypothesis/reference character n-grams per order). ``stats`` gives
    those counts per example, once; ``from_stats`` turns a column sum into the score. The bootstrap then resamples
    rows of a count matrix instead of re-tokenizing the corpus, about 400x faster, and gives exactly the scores the
    loop would. This is how sacrebleu's own ``significance`` module resamples, with the same two methods.
    """

    def __init__(self, kind: SacreKind) -> None:
        self.kind: SacreKind = kind

    def __call__(self, preds: Sequence[str], refs: RefsIn) -> float:
        _check(preds, refs)
        return float(_sacrebleu_metric(self.kind).corpus_score(list(preds), _ref_streams(refs)).score)

    def stats(self, preds: Sequence[str], refs: RefsIn) -> np.ndarray:
        """Integer counts, shape (n_examples, n_stats); their column sum determines the corpus score."""
        _check(preds, refs)
        rows = _sacrebleu_metric(self.kind)._extract_corpus_statistics(list(preds), _ref_streams(refs))
        return np.asarray(rows, dtype=np.int64)

    def from_stats(self, total: np.ndarray) -> float:
        """The corpus score from summed statistics, shape (n_stats,)."""
        return float(_score_from_stats_metric(self.kind)._compute_score_from_stats(total).score)


def bleu(preds: Sequence[str], refs: RefsIn) -> float:
    """Corpus BLEU (0-100): n-gram counts are pooled over the corpus, not averaged over sentences."""
    return SacrebleuCorpus("bleu")(preds, refs)


def chrf(preds: Sequence[str], refs: RefsIn) -> float:
    """Corpus chrF (0-100): character n-gram F-beta with beta = 2 (recall weighs twice precision)."""
    return SacrebleuCorpus("chrf")(preds, refs)


@lru_cache(maxsize=len(ROUGE_TYPES))
def _scorer(kind: RougeType) -> Any:
    from rouge_score import rouge_scorer

    # Built once per type: constructing the scorer loads the stemmer, which costs more than scoring a sentence.
    # One type per scorer, so that ROUGE-1/2 never pay for ROUGE-L's quadratic LCS table.
    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


# rouge-score's LCS table is a Python list of lists, quadratic in the token counts: two 50,000-word texts need
# 2.5e9 cells (tens of GB). ROUGE-L therefore compares the first ROUGE_L_MAX_TOKENS tokens of each text.
ROUGE_L_MAX_TOKENS = 2000
# rouge-score's default tokenizer: lowercase, keep runs of [a-z0-9]. Re-joining its tokens with spaces gives
# the same tokens back, so clipping this way changes nothing for texts under the limit.
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def _clip_for_lcs(text: str) -> str:
    tokens = _ROUGE_TOKEN.findall(text.lower())
    return text if len(tokens) <= ROUGE_L_MAX_TOKENS else " ".join(tokens[:ROUGE_L_MAX_TOKENS])


def rouge(pred: str, refs: str | Sequence[str], kind: RougeType = "rougeL") -> float:
    """ROUGE-1/2/L F-measure of one prediction against its best reference (``RougeScorer.score_multi``).

    ROUGE-L looks at the first ``ROUGE_L_MAX_TOKENS`` tokens of each text (see there why).
    """
    if kind not in ROUGE_TYPES:
        raise ValueError(f"unknown ROUGE type {kind!r}; expected one of {ROUGE_TYPES}")
    targets = [refs] if isinstance(refs, str) else list(refs)
    if not targets:
        raise ValueError("no reference to compare against")
    if kind == "rougeL":
        pred, targets = _clip_for_lcs(pred), [_clip_for_lcs(t) for t in targets]
    # score_multi keeps, per ROUGE type, the reference with the highest F-measure.
    return float(_scorer(kind).score_multi(targets, pred)[kind].fmeasure)


def rouge_mean(preds: Sequence[str], refs: Sequence[str | Sequence[str]], kind: RougeType = "rougeL") -> float:
    """Mean per-example ROUGE F-measure over a corpus."""
    _check(preds, refs)
    return sum(rouge(p, r, kind) for p, r in zip(preds, refs, strict=True)) / len(preds)


def perplexity_from_nll(total_nll: float, total_tokens: int) -> float:
    """Perplexity = exp(total negative log-likelihood in nats / number of predicted tokens).

    Pool the NLL and token counts over the whole eval set before dividing (a token-weighted mean), as in Jelinek et
    al. 1977; averaging per-example perplexities would overweight short examples. Returns ``inf`` on overflow.
    """
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got total_tokens={total_tokens}")
    mean_nll = total_nll / total_tokens
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf
