"""BLEU/chrF (sacrebleu), ROUGE (rouge-score) and perplexity against hand-computed values."""

from __future__ import annotations

import math

import pytest

from tailorlm.eval.metrics.text import bleu, chrf, perplexity_from_nll, rouge, rouge_mean

pytestmark = pytest.mark.unit


def test_bleu_hand_computed() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat", both 6 tokens → brevity penalty 1
    # clipped n-gram precisions: 1-gram 5/6 (the, cat, sat, on, mat; the 2nd "the" is clipped),
    # 2-gram 3/5 (the cat, cat sat, sat on), 3-gram 2/4 (the cat sat, cat sat on), 4-gram 1/3 (the cat sat on)
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25 = 0.53728 → 53.728 on sacrebleu's 0-100 scale
    score = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert score == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-3)


def test_bleu_identity_and_multi_reference() -> None:
    assert bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    # A second reference that matches exactly lifts the score to 100; examples with fewer references are padded.
    assert bleu(
        ["the cat sat on the mat", "x y z w"], [["the cat sat on a mat", "the cat sat on the mat"], "x y z w"]
    ) == (pytest.approx(100.0))


def test_bleu_is_corpus_level() -> None:
    # Two sentences: one perfect (4 tokens), one with no 4-gram match. Corpus BLEU pools counts, so it is not the mean
    # of the sentence scores.
    preds, refs = ["a b c d", "e f g h"], ["a b c d", "e f g x"]
    corpus = bleu(preds, refs)
    mean_of_sentences = (bleu(preds[:1], refs[:1]) + bleu(preds[1:], refs[1:])) / 2
    # pooled: 1-gram 7/8, 2-gram 5/6, 3-gram 3/4, 4-gram 1/2 → (7/8 * 5/6 * 3/4 * 1/2) ** 0.25 = 0.7114
    assert corpus == pytest.approx(100 * (7 / 8 * 5 / 6 * 3 / 4 * 1 / 2) ** 0.25, abs=1e-3)
    assert corpus != pytest.approx(mean_of_sentences)


def test_chrf_bounds() -> None:
    assert chrf(["hello world"], ["hello world"]) == pytest.approx(100.0)
    assert chrf(["qqqq"], ["zzzz"]) == 0.0
    assert 0 < chrf(["hello wrld"], ["hello world"]) < 100


def test_rouge_hand_computed() -> None:
    # "the cat sat" vs "the cat ran": unigram overlap 2 of 3 each way → P = R = F = 2/3
    assert rouge("the cat sat", "the cat ran", "rouge1") == pytest.approx(2 / 3)
    # bigrams {the cat, cat sat} vs {the cat, cat ran}: 1 of 2 → F = 1/2
    assert rouge("the cat sat", "the cat ran", "rouge2") == pytest.approx(0.5)
    # LCS "the cat" has length 2 → P = R = F = 2/3
    assert rouge("the cat sat", "the cat ran", "rougeL") == pytest.approx(2 / 3)
    # best of several references; the Porter stemmer makes "cats" match "cat"
    assert rouge("the cats sat", ["dogs", "the cat sat"], "rouge1") == pytest.approx(1.0)


def test_rouge_mean_averages_examples() -> None:
    # example 1: 2/3 (above); example 2: identical → 1.0; mean = 5/6
    assert rouge_mean(["the cat sat", "a b"], ["the cat ran", "a b"], "rouge1") == pytest.approx(5 / 6)


def test_perplexity_from_nll() -> None:
    # 4 tokens with total NLL 4·ln 3 → mean NLL ln 3 → perplexity 3
    assert perplexity_from_nll(4 * math.log(3), 4) == pytest.approx(3.0)
    assert perplexity_from_nll(0.0, 10) == 1.0
    assert perplexity_from_nll(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        perplexity_from_nll(1.0, 0)


def test_length_mismatch() -> None:
    with pytest.raises(ValueError, match="predictions"):
        bleu(["a"], ["a", "b"])
