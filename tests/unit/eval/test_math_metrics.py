"""Numeric answer extraction and matching (GSM8K conventions)."""

from __future__ import annotations

import pytest

from tailorlm.eval.metrics.math import extract_gsm8k_answer, extract_last_number, numeric_match, parse_number

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("#### $5", "5"),
        ("#### -3", "-3"),
        ("#### 42.\nand then some more text", "42"),  # generations may continue after the answer line
        ("a #### 1 then #### 2", "2"),  # the last marker counts
        ("no marker 42", None),
        ("####   ", None),
    ],
)
def test_extract_gsm8k_answer(text: str, expected: str | None) -> None:
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),  # trailing period is punctuation
        ("From 10 down to -7", "-7"),
        ("It costs $1,234,567.50 in total", "1234567.50"),
        ("about 0.25 of it", "0.25"),
        ("so 3/4 of the cake", "3/4"),
        ("pages 3-4", "4"),  # a hyphen between numbers is not a minus sign
        ("1, 2, 3", "3"),  # a list, not a thousands separator
        ("−5 degrees", "-5"),  # Unicode minus
        ("no numbers here", None),
    ],
)
def test_extract_last_number(text: str, expected: str | None) -> None:
    assert extract_last_number(text) == expected


def test_parse_number() -> None:
    assert parse_number("1,234") == 1234.0
    assert parse_number("-3/4") == -0.75
    assert parse_number("$5.50") == 5.5
    assert parse_number("1/0") is None
    assert parse_number("abc") is None


def test_numeric_match() -> None:
    ref = "Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert numeric_match("So she sold 72 clips.", ref) == 1.0
    assert numeric_match("#### 72", ref) == 1.0
    assert numeric_match("I get 71, or maybe 72.0", ref) == 1.0  # the last number counts
    assert numeric_match("72 clips, plus 3 more", ref) == 0.0
    assert numeric_match("I don't know", ref) == 0.0
    assert numeric_match("0.75", "3/4") == 1.0
    assert numeric_match("1,000,000", "1000000") == 1.0


def test_numeric_match_tolerance() -> None:
    # |0.3333333 - 1/3| = 3.3e-8 <= 1e-6 → match; with tol 1e-9 it does not
    assert numeric_match("0.3333333", "1/3") == 1.0
    assert numeric_match("0.3333333", "1/3", tol=1e-9) == 0.0
    # tol is absolute: an off-by-one integer never matches, however large (a relative 1e-6 would accept this)
    assert numeric_match("192000001", "#### 192000000") == 0.0
    assert numeric_match("192,000,000", "#### 192000000") == 1.0


def test_reference_without_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="no numeric answer"):
        numeric_match("42", "forty-two")


def test_registry_numeric_match_takes_any_reference() -> None:
    from tailorlm.eval.metrics import compute_metrics

    # example 1 matches its second reference, example 2 matches nothing → 1/2
    out = compute_metrics(["numeric_match"], ["It is 0.5", "7"], [["1/3", "1/2"], "#### 8"])
    assert out == {"numeric_match": 0.5}
