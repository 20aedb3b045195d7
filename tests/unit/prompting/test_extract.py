import pytest

from tailorlm.prompting.extract import (
    CHAIN_OF_THOUGHT_SUFFIX,
    canonical_number,
    extract_answer,
    make_extractor,
    normalize_number,
)

pytestmark = pytest.mark.unit

GSM8K_CHAIN = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 + 4 = 7 apples. The answer is 7.", "7"),
        ("Each costs $6, so 3 cost $18. The answer is: $18.", "$18"),
        ("First, 2 * 3 = 6.\nThen 6 - 10 = -4.\nThe answer is -4", "-4"),
        ("The average is 10.5 / 3 = 3.5. The answer is 3.5.", "3.5"),
        ("The answer is not 5, since we lose two. So the answer is 3. Hope that helps!", "3"),
        ("THE ANSWER IS **42**.", "42"),
        ("Reasoning...\nFinal answer: Paris\nLet me know if you need more.", "Paris"),
        ("The final answer is 1,234.", "1,234"),
        ("Answer:\n  positive", "positive"),
        ("The answer is - 7 apples", "7 apples"),
        ("The answer is 3.5 kg. That is heavy.", "3.5 kg"),
        ("the answer isn't obvious; we get 12 in the end", None),
        ("We get 12 in the end.", None),
        ("The answer is.", None),
    ],
)
def test_after_marker_reads_the_sentence_after_the_last_marker(text: str, expected: str | None) -> None:
    assert extract_answer(text, "after_marker") == expected


def test_after_marker_accepts_a_custom_marker_and_keeps_the_variants() -> None:
    assert extract_answer("stuff. Result: 9 cats", "after_marker", marker="Result:") == "9 cats"
    assert extract_answer("stuff. Answer: 9", "after_marker", marker="Result:") == "9"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 + 4 = 7 apples. The answer is 7.", "7"),
        ("The answer is: $18.", "18"),
        ("So the total is 1,000.0 dollars.", "1000"),
        ("It drops to -12 degrees.", "-12"),
        ("Each gets 2.50 dollars", "2.5"),
        ("three quarters, i.e. 3/4", "0.75"),
        (GSM8K_CHAIN, "72"),
        ("no numbers here", None),
    ],
)
def test_last_number_is_canonical(text: str, expected: str | None) -> None:
    assert extract_answer(text, "last_number") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GSM8K_CHAIN, "72"),
        ("so 617 + 617 = 1,234\n#### 1,234", "1234"),
        ("#### -3.50\nThe end.", "-3.5"),
        ("#### $18.", "18"),
        ("#### five", "five"),
        ("The answer is 72.", None),  # strict: no "####", no answer
    ],
)
def test_gsm8k_takes_the_text_after_the_last_hashes(text: str, expected: str | None) -> None:
    assert extract_answer(text, "gsm8k") == expected


LABELS = ["positive", "negative", "neutral"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: positive", "positive"),
        ("The reviewer complains about nothing negative; the tone is warm. The answer is positive.", "positive"),
        ("Negative.", "negative"),
        ("It is neither, so neutral", "neutral"),
        ("The answer is unclear.", None),
    ],
)
def test_label_prefers_the_answer_sentence_over_labels_in_the_reasoning(text: str, expected: str | None) -> None:
    assert extract_answer(text, "label", labels=LABELS) == expected


def test_regex_takes_the_first_group_of_the_last_match() -> None:
    text = "Option (A) looks tempting, but (C) fits. Choice: (B)"
    assert extract_answer(text, "regex", pattern=r"\(([A-D])\)") == "B"
    assert extract_answer(text, "regex", pattern=r"\([A-D]\)") == "(B)"  # no group: the whole match
    assert extract_answer(text, "regex", pattern=r"(?i)choice:\s*\((\w)\)") == "B"
    assert extract_answer("nothing", "regex", pattern=r"\(([A-D])\)") is None


def test_raw_is_the_stripped_text() -> None:
    assert extract_answer("  Paris \n", "raw") == "Paris"
    assert extract_answer("   ", "raw") is None


def test_missing_settings_fail_loudly() -> None:
    with pytest.raises(ValueError, match="labels"):
        extract_answer("x", "label")
    with pytest.raises(ValueError, match="pattern"):
        make_extractor("regex")
    with pytest.raises(ValueError, match="unknown extract method"):
        extract_answer("x", "nope")  # type: ignore[arg-type]


def test_make_extractor_binds_the_settings() -> None:
    extract = make_extractor("label", labels=LABELS)
    assert extract("Hmm. The answer is Negative!") == "negative"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("18", "18"), ("18.0", "18"), ("$18.00", "18"), ("1,000", "1000"), ("-0.50", "-0.5"), ("x", None)],
)
def test_canonical_number(text: str, expected: str | None) -> None:
    assert canonical_number(text) == expected


def test_normalize_number_leaves_text_alone() -> None:
    assert normalize_number(" Paris ") == "Paris"
    assert normalize_number("18.0") == normalize_number("$18")


def test_cot_suffix_has_the_trigger_and_the_answer_format() -> None:
    assert CHAIN_OF_THOUGHT_SUFFIX.startswith("Let's think step by step.")
    # The instruction asks for exactly the phrase that the default extractor looks for.
    assert extract_answer("... The answer is X.", "after_marker") == "X"
    assert "The answer is X." in CHAIN_OF_THOUGHT_SUFFIX
