"""Classification metrics against hand-computed confusion matrices."""

from __future__ import annotations

import json

import pytest

from tailorlm.eval.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    micro_f1,
    normalize_label,
    per_class,
)

pytestmark = pytest.mark.unit

LABELS = ["negative", "neutral", "positive"]
# true:  pos pos pos neg neg neu
# pred:  pos pos neg neg pos None
REFS = ["positive", "positive", "positive", "negative", "negative", "neutral"]
PREDS = ["positive", "positive", "negative", "negative", "positive", None]


def test_confusion_matrix_rows_true_cols_pred() -> None:
    cm = confusion_matrix(PREDS, REFS, LABELS)
    assert cm == {
        "labels": LABELS,
        "matrix": [
            [1, 0, 1],  # negative: 1 right, 1 called positive
            [0, 0, 0],  # neutral: its one example predicted None → "other"
            [1, 0, 2],  # positive: 2 right, 1 called negative
        ],
        "other": [0, 1, 0],
    }
    json.dumps(cm)  # plain JSON structure


def test_per_class_hand_computed() -> None:
    pc = per_class(PREDS, REFS, LABELS)
    # negative: TP 1, FP 1 (a positive), FN 1 → P 1/2, R 1/2, F1 1/2
    assert pc["negative"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # neutral: never predicted, one missed → P 0 (zero_division), R 0, F1 0
    assert pc["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # positive: TP 2, FP 1 (a negative), FN 1 → P 2/3, R 2/3, F1 2/3
    assert pc["positive"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})


def test_averages_hand_computed() -> None:
    # accuracy: 3 right of 6
    assert accuracy(PREDS, REFS) == 0.5
    # macro: (1/2 + 0 + 2/3) / 3 = (7/6) / 3 = 7/18
    assert macro_f1(PREDS, REFS, LABELS) == pytest.approx(7 / 18)
    # micro: TP 3, FP 2 (5 predictions that are labels), FN 3 → P 3/5, R 3/6, F1 = 2*.6*.5/1.1 = 6/11
    assert micro_f1(PREDS, REFS, LABELS) == pytest.approx(6 / 11)


def test_micro_f1_equals_accuracy_without_abstentions() -> None:
    preds = ["a", "b", "b", "a"]
    refs = ["a", "b", "a", "a"]
    assert micro_f1(preds, refs) == accuracy(preds, refs) == 0.75


def test_default_labels_are_the_gold_set() -> None:
    # "maybe" is not a gold label: it counts as "other", not as a fourth class in the macro average
    cm = confusion_matrix(["yes", "maybe"], ["yes", "no"])
    assert cm["labels"] == ["no", "yes"] and cm["other"] == [1, 0]
    # F1(no) = 0, F1(yes) = 1 → macro 0.5
    assert macro_f1(["yes", "maybe"], ["yes", "no"]) == 0.5


def test_report_is_json_ready() -> None:
    report = classification_report(PREDS, REFS, LABELS)
    assert set(report) == {"accuracy", "macro_f1", "micro_f1", "per_class", "confusion"}
    json.dumps(report)


def test_errors() -> None:
    with pytest.raises(ValueError, match="predictions"):
        accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="not among the labels"):
        macro_f1(["a"], ["z"], ["a", "b"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Positive", "positive"),  # exact, case-insensitive
        (" positive. ", "positive"),  # surrounding punctuation/space stripped
        ("The sentiment is negative.", "negative"),  # label as a word in the text
        ("Negative, definitely not positive", "negative"),  # earliest occurrence wins
        ("very negative, I think", "very negative"),  # same position: the longer label wins
        ("positively", None),  # whole words only
        ("no idea", None),
    ],
)
def test_normalize_label(text: str, expected: str | None) -> None:
    assert normalize_label(text, ["negative", "very negative", "positive"]) == expected


def test_registry_classification_metrics_map_generations_to_labels() -> None:
    from tailorlm.eval.metrics import compute_metrics

    preds = ["Positive.", "I'd say negative", "neutral", "hmm"]
    refs = ["positive", "negative", "positive", "negative"]
    labels = ["negative", "neutral", "positive"]
    out = compute_metrics(
        ["accuracy", "macro_f1", "micro_f1"],
        preds,
        refs,
        options={"accuracy": {"labels": labels}, "macro_f1": {"labels": labels}, "micro_f1": {"labels": labels}},
    )
    # mapped: positive, negative, neutral, None → right, right, wrong, wrong: accuracy 2/4
    # per class: negative TP1 FP0 FN1 → F1 2/3; neutral TP0 FP1 → 0; positive TP1 FP0 FN1 → 2/3
    # macro = (2/3 + 0 + 2/3) / 3 = 4/9; micro: TP 2, FP 1, FN 2 → P 2/3, R 1/2 → F1 = (2/3) / (7/6) = 4/7
    assert out == {"accuracy": 0.5, "macro_f1": pytest.approx(4 / 9), "micro_f1": pytest.approx(4 / 7)}


def test_registry_accuracy_reads_labels_from_example_metadata() -> None:
    from tailorlm.eval.metrics import get_metric

    examples = [{"metadata": {"labels": ["yes", "no"]}}] * 2
    m = get_metric("accuracy")
    assert m.scores(["Yes, clearly.", "The answer is no"], ["yes", "yes"], examples) == [1.0, 0.0]
    # without a label set, accuracy compares the stripped, case-folded strings
    assert m.scores(["Yes.", "yes it is"], ["yes", "yes"]) == [1.0, 0.0]
