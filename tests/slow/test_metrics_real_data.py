"""Metrics on real data from ../shared/data: every format in the data sets parses, and scores land where they must.

Run with ``pytest tests/slow/test_metrics_real_data.py -m slow``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from tailorlm.eval.metrics import (
    compute_metrics,
    extract_gsm8k_answer,
    extract_last_number,
    get_metric,
    normalize_answer,
    numeric_match,
    per_example_scores,
)
from tailorlm.eval.stats import bootstrap_metric, compare_metric

pytestmark = pytest.mark.slow


# ---- XQuAD (SQuAD v1.1 format): data → paragraphs → qas → answers --------------------------------------------


def _xquad(shared_data: Path) -> list[list[str]]:
    data = json.loads((shared_data / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))
    return [
        [a["text"] for a in qa["answers"]]
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def test_xquad_gold_against_itself(shared_data: Path) -> None:
    refs = _xquad(shared_data)
    assert len(refs) == 1190
    preds = [r[0] for r in refs]
    assert compute_metrics(["exact_match", "f1"], preds, refs) == {"exact_match": 1.0, "f1": 1.0}


def test_xquad_truncated_answers(shared_data: Path) -> None:
    refs = _xquad(shared_data)
    tokens = [normalize_answer(r[0]).split() for r in refs]
    multi = [(t, r) for t, r in zip(tokens, refs, strict=True) if len(t) >= 2]
    # Drop the last normalized token: the prediction is a sub-multiset of the k reference tokens, so
    # P = 1, R = (k-1)/k and F1 = 2(k-1)/(2k-1) exactly; EM is 0.
    preds = [" ".join(t[:-1]) for t, _ in multi]
    scores = per_example_scores(["exact_match", "f1"], preds, [r for _, r in multi])
    assert set(scores["exact_match"]) == {0.0}
    expected = [2 * (len(t) - 1) / (2 * len(t) - 1) for t, _ in multi]
    assert scores["f1"] == pytest.approx(expected)
    mean_f1 = sum(scores["f1"]) / len(scores["f1"])
    # most XQuAD answers are 2-4 tokens (F1 2/3 .. 6/7), so the mean sits in between
    assert 0.6 < mean_f1 < 0.85, mean_f1

    # Keeping the first half of the characters: partial credit, below the token-dropping case on average.
    half = [r[0][: len(r[0]) // 2] for r in refs]
    out = compute_metrics(["exact_match", "f1"], half, refs)
    assert out["exact_match"] < 0.2 and 0.2 < out["f1"] < 0.6, out

    # Another question's answer: almost no overlap.
    shifted = [r[0] for r in refs[1:] + refs[:1]]
    out = compute_metrics(["exact_match", "f1"], shifted, refs)
    assert out["exact_match"] < 0.02 and out["f1"] < 0.1, out


# ---- SST-2: tab-separated "sentence<TAB>label", label 0 = negative, 1 = positive -----------------------------


def _sst2(shared_data: Path, split: str) -> list[tuple[str, str]]:
    with (shared_data / "sst" / f"sst2_{split}.tsv").open(encoding="utf-8", newline="") as f:
        return [(row[0], row[1]) for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def test_sst2_majority_class(shared_data: Path) -> None:
    train, dev = _sst2(shared_data, "train"), _sst2(shared_data, "dev")
    majority, _ = Counter(label for _, label in train).most_common(1)[0]
    refs = [label for _, label in dev]
    counts = Counter(refs)
    assert len(dev) == 872 and majority == "1"
    preds = [majority] * len(dev)
    labels = {"labels": ["0", "1"]}
    out = compute_metrics(
        ["accuracy", "macro_f1", "micro_f1"], preds, refs, options={"macro_f1": labels, "micro_f1": labels}
    )
    acc = counts["1"] / len(dev)  # 444 / 872 = 0.509
    f1_pos = 2 * acc / (acc + 1)  # P = acc, R = 1
    assert out == pytest.approx({"accuracy": acc, "macro_f1": f1_pos / 2, "micro_f1": acc})

    # The same predictor as generated text, mapped onto label names.
    names = {"0": "negative", "1": "positive"}
    opts = {"labels": ["negative", "positive"]}
    out = compute_metrics(
        ["accuracy", "macro_f1"],
        ["Sentiment: Positive."] * len(dev),
        [names[r] for r in refs],
        options={"accuracy": opts, "macro_f1": opts},
    )
    assert out == pytest.approx({"accuracy": acc, "macro_f1": f1_pos / 2})
    ci = bootstrap_metric(get_metric("macro_f1", {"labels": ["0", "1"]}), preds, refs, n_resamples=200)
    assert ci["low"] <= ci["mean"] <= ci["high"]


# ---- GSM8K: "answer" is the worked solution ending in "#### N" ------------------------------------------------


def test_gsm8k_reference_matches_itself(shared_data: Path) -> None:
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").open(encoding="utf-8")]
    assert len(rows) == 7473
    answers = [r["answer"] for r in rows]
    finals = [extract_gsm8k_answer(a) for a in answers]
    assert all(f is not None for f in finals)
    assert compute_metrics(["numeric_match"], answers, answers) == {"numeric_match": 1.0}
    # The free-text extractor must find the same number: the last number of the worked solution is the one after
    # "####" (raw form, e.g. "1,600" or "-3"), and a sentence quoting it must match the reference.
    raw = [a.rsplit("####", 1)[1].strip() for a in answers]
    assert [extract_last_number(a) for a in answers] == finals
    assert all(numeric_match(f"So the answer is {r}.", a) == 1.0 for r, a in zip(raw, answers, strict=True))
    # An off-by-one answer must not match any reference, however large (answers reach 2,560,000,000 here).
    assert not any(numeric_match(str(int(f) + 1), a) for f, a in zip(finals, answers, strict=True))  # type: ignore[arg-type]


# ---- BLEU / chrF / ROUGE on real sentences --------------------------------------------------------------------


def _perturb(sentence: str, every: int) -> str:
    # Drop every `every`-th word: a realistic "mostly right" paraphrase whose n-gram overlap we can reason about.
    words = sentence.split()
    return " ".join(w for i, w in enumerate(words, start=1) if i % every)


def test_text_metrics_sanity_ranges(shared_data: Path) -> None:
    sentences = [s for s, _ in _sst2(shared_data, "dev")[:300]]
    names = ["bleu", "chrf", "rouge1", "rouge2", "rougeL"]
    same = compute_metrics(names, sentences, sentences)
    assert same == pytest.approx({"bleu": 100.0, "chrf": 100.0, "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})

    light = [_perturb(s, 6) for s in sentences]
    heavy = [_perturb(s, 2) for s in sentences]
    unrelated = sentences[1:] + sentences[:1]
    s_light = compute_metrics(names, light, sentences)
    s_heavy = compute_metrics(names, heavy, sentences)
    s_unrel = compute_metrics(names, unrelated, sentences)
    for name in names:
        assert s_unrel[name] < s_heavy[name] < s_light[name] < same[name], name
    assert 50 < s_light["bleu"] < 95 and 70 < s_light["chrf"] < 99
    assert 0.85 < s_light["rouge1"] < 1.0 and s_light["rouge2"] < s_light["rouge1"]
    # dropping half the words: unigram recall about 1/2, precision 1 → F about 2/3
    assert 0.55 < s_heavy["rouge1"] < 0.8
    assert s_unrel["bleu"] < 5 and s_unrel["rouge2"] < 0.1

    # Statistics on a corpus metric: the interval brackets the score, and light beats heavy beyond doubt.
    bleu = get_metric("bleu")
    ci = bootstrap_metric(bleu, light, sentences, n_resamples=200)
    assert ci["mean"] == pytest.approx(s_light["bleu"])
    assert ci["low"] < ci["mean"] < ci["high"]
    cmp = compare_metric(bleu, light, heavy, sentences, n_resamples=200)
    assert cmp["diff"] > 0 and cmp["low"] > 0 and cmp["p_value"] < 0.01
    rouge = compare_metric(get_metric("rougeL"), light, heavy, sentences, n_resamples=1000)
    assert rouge["low"] > 0 and rouge["p_value"] < 0.01
