"""Numeric-answer metrics for math word problems (GSM8K style).

Reference: Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems" (GSM8K). Its references end in
``#### <answer>``; the official grader (``grade_school_math/dataset.py``) takes the text after ``####``, strips
commas and compares. Model output rarely follows that format, so predictions fall back to the last number in the
text, the common convention of lm-evaluation-harness's "flexible-extract" filter.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

# A number: optional sign, then digits with proper thousands groups ("1,234,567") or plain digits, an optional
# decimal part, and optionally "/denominator". The sign must not follow a word character, so the "-" in "3-4" or
# "x-5" is read as a hyphen, not a negative sign. "−" is the Unicode minus. A trailing "." is not consumed, because
# the decimal part requires digits after the point ("is 42." → "42").
_INT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_NUMBER = re.compile(
    rf"(?<![\w.])(?P<sign>[-−]?)\$?(?P<num>{_INT}(?:\.\d+)?|\.\d+)(?:\s*/\s*(?P<den>{_INT}))?(?![\w/])"
)


def _clean(number: str) -> str:
    return number.replace(",", "").replace("$", "").replace("−", "-").strip()


def parse_number(text: str) -> float | None:
    """``"1,234"`` → 1234.0, ``"-3/4"`` → -0.75, ``"$5.50"`` → 5.5; ``None`` when the text is not a number."""
    s = _clean(text).rstrip(".")
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(Fraction(num.strip()) / Fraction(den.strip()))
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


def extract_gsm8k_answer(text: str) -> str | None:
    """The answer after the last ``####`` (commas, ``$`` and a trailing period removed), or ``None`` without one."""
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip()
    # The reference answer sits alone on the last line; generated text may continue after it.
    tail = tail.splitlines()[0].strip() if tail else ""
    answer = _clean(tail).rstrip(".").strip()
    return answer or None


def extract_last_number(text: str) -> str | None:
    """The last number in free text, normalized to a plain numeric string (``"-1234.5"``, ``"3/4"``), or ``None``.

    Handles negatives, decimals, thousands separators, a ``$`` prefix, a trailing period and fractions ``a/b``.
    """
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    sign = "-" if m["sign"] else ""
    number = sign + _clean(m["num"])
    return f"{number}/{_clean(m['den'])}" if m["den"] else number


def _answer(text: str) -> float | None:
    # "#### N" wins when present (references, and models trained on GSM8K's format); a bare number is parsed as is;
    # anything else falls back to the last number in the text.
    if "####" in text:
        found = extract_gsm8k_answer(text)
        return parse_number(found) if found is not None else None
    direct = parse_number(text)
    if direct is not None:
        return direct
    last = extract_last_number(text)
    return parse_number(last) if last is not None else None


# Relative slack for float round-off only (parsing "0.1" or "1/3" is off by ~1e-16 relative). It must stay far
# below 1/answer for integer answers: a relative tolerance of 1e-6 would accept 192000001 for 192000000.
_REL_ROUNDOFF = 1e-12


def numeric_match(pred_text: str, ref_text: str, tol: float = 1e-6) -> float:
    """1.0 when the answers in prediction and reference differ by at most ``tol`` (absolute), else 0.0.

    ``math.isclose(p, r, rel_tol=1e-12, abs_tol=tol)``: ``tol`` is absolute, so "0.3333333" matches "1/3" but an
    off-by-one integer never matches however large; the 1e-12 relative slack only absorbs float round-off. A
    prediction without a number scores 0; a reference without one is a data error.
    """
    ref = _answer(ref_text)
    if ref is None:
        raise ValueError(f"reference has no numeric answer: {ref_text[-80:]!r}")
    pred = _answer(pred_text)
    return float(pred is not None and math.isclose(pred, ref, rel_tol=_REL_ROUNDOFF, abs_tol=tol))
