"""SQuAD EM / token F1 against hand-computed values (official v1.1 script semantics)."""

from __future__ import annotations

import pytest

from tailorlm.eval.metrics.qa import exact_match, normalize_answer, token_f1

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),  # lower, drop "!", drop "the"
        ("  an   apple,\ta pear ", "apple pear"),  # articles go, whitespace collapses
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("the.", ""),  # punctuation goes first, then "the" is a word and goes too
        ("U.S.A.", "usa"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_takes_best_reference() -> None:
    assert exact_match("the Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Broncos", "Denver Broncos"]) == 0.0
    assert exact_match("Denver Broncos.", "denver broncos") == 1.0  # a bare string is one reference


def test_token_f1_hand_computed() -> None:
    # pred tokens [denver, broncos, won], ref tokens [broncos]: overlap 1
    # P = 1/3, R = 1/1, F1 = 2 * (1/3) * 1 / (1/3 + 1) = (2/3) / (4/3) = 0.5
    assert token_f1("Denver Broncos won", "the Broncos") == pytest.approx(0.5)
    # max over refs: vs "Denver Broncos" overlap 2, P = 2/3, R = 1, F1 = (4/3) / (5/3) = 0.8
    assert token_f1("Denver Broncos won", ["the Broncos", "Denver Broncos"]) == pytest.approx(0.8)


def test_token_f1_counts_repeated_tokens_once_per_match() -> None:
    # pred [a?] -> "the cat the cat" normalizes to [cat, cat]; ref [cat]: common = min(2, 1) = 1
    # P = 1/2, R = 1, F1 = 1 / 1.5 = 2/3
    assert token_f1("the cat the cat", "cat") == pytest.approx(2 / 3)


def test_token_f1_no_overlap_and_empty() -> None:
    assert token_f1("Paris", "London") == 0.0
    assert token_f1("", "London") == 0.0
    # both normalize to nothing: SQuAD v2.0 convention, 1.0
    assert token_f1("The", "a") == 1.0


def test_no_references_is_an_error() -> None:
    with pytest.raises(ValueError):
        exact_match("x", [])


# ---- the registry, exercised through the QA metrics ---------------------------------------------------------


def test_registry_scores_are_means_of_per_example_scores() -> None:
    from tailorlm.eval.metrics import compute_metrics, per_example_scores

    preds = ["Denver Broncos won", "Paris", "no idea"]
    refs: list = [["the Broncos", "Denver Broncos"], "Paris", "London"]
    # EM: 0, 1, 0 → 1/3. F1: 0.8 (hand-computed above), 1, 0 → 1.8 / 3 = 0.6
    assert per_example_scores(["exact_match", "f1"], preds, refs) == {
        "exact_match": [0.0, 1.0, 0.0],
        "f1": [pytest.approx(0.8), 1.0, 0.0],
    }
    assert compute_metrics(["exact_match", "f1"], preds, refs) == {
        "exact_match": pytest.approx(1 / 3),
        "f1": pytest.approx(0.6),
    }


def test_registry_names_and_metric_shape() -> None:
    from tailorlm.eval.metrics import METRIC_NAMES, get_metric

    expected = {"exact_match", "f1", "accuracy", "macro_f1", "micro_f1", "bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    tools = {"tool_ast", "tool_call_valid"}
    assert expected | {"numeric_match", "json_valid", "json_schema", "contains_answer"} | tools == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        m = get_metric(name)
        assert m.name == name and m.higher_is_better
        assert (m.per_example is None) != (m.corpus is None)
    assert get_metric("bleu").corpus is not None and get_metric("f1").per_example is not None


def test_unknown_metric_suggests_the_closest() -> None:
    from tailorlm.errors import ConfigError
    from tailorlm.eval.metrics import get_metric

    with pytest.raises(ConfigError) as err:
        get_metric("exact_mach")
    assert "valid metrics: exact_match, f1" in str(err.value)
    assert "did you mean 'exact_match'?" in str(err.value)
    with pytest.raises(ConfigError, match="has no option 'labels'"):
        get_metric("f1", {"labels": ["a"]})
    with pytest.raises(ConfigError, match="wrong type"):
        get_metric("numeric_match", {"tol": "small"})
    with pytest.raises(ConfigError, match="list of label names"):
        get_metric("accuracy", {"labels": [0, 1]})


def test_missing_reference_is_a_data_error() -> None:
    from tailorlm.errors import DataError
    from tailorlm.eval.metrics import compute_metrics

    with pytest.raises(DataError, match="first at index 1"):
        compute_metrics(["exact_match"], ["a", "b"], ["a", None])
    with pytest.raises(DataError, match="2 predictions but 1 references"):
        compute_metrics(["f1"], ["a", "b"], ["a"])


@pytest.mark.unit
@pytest.mark.parametrize(
    ("pred", "refs", "expected"),
    [
        ("The Panthers gave up 308 points.", ["308"], 1.0),  # inside a sentence
        ("They gave up 3080 points", ["308"], 0.0),  # whole words only
        ("It was the Denver Broncos!", ["Denver Broncos"], 1.0),  # punctuation and articles normalized
        ("no idea", ["Rollo", "duke Rollo"], 0.0),
        ("anything", [""], 0.0),  # an empty reference matches nothing
    ],
)
def test_contains_answer(pred: str, refs: list[str], expected: float) -> None:
    from tailorlm.eval.metrics import contains_answer

    assert contains_answer(pred, refs) == expected
