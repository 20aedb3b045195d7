"""Fuzz the eval metrics on empty, huge, unicode and control-character predictions and references.

The property: every metric returns a float (in [0, 1] where the metric is a rate), or raises a ``DataError``
that names the metric. Any other exception is a bug.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.fuzz_helpers import HOSTILE, budget, counted, nasty_text
from tailorlm.errors import DataError
from tailorlm.eval.metrics import METRIC_NAMES, get_metric

pytestmark = pytest.mark.unit

# Texts that stress normalisation, tokenisation and number parsing: huge, numeric-looking, JSON-looking.
text = st.one_of(
    nasty_text,
    st.sampled_from(HOSTILE),
    st.sampled_from(["", " ", "0", "-0", "1e308", "1e309", "nan", "inf", "1,000.5", "٣", "½", "#### 42", "{}", "[]"]),
    st.sampled_from(['{"a": 1}', '```json\n{"a": [1, 2]}\n```', "{" * 2000, "[" * 2000, "[" * 100_000, "9" * 5000]),
    st.builds(
        lambda t, n: t * n, st.sampled_from(["a ", "é", "\x00", "🤖", "word. "]), st.sampled_from([1000, 20_000])
    ),
)
reference = st.one_of(text, st.lists(text, max_size=3), st.none())
# The one metric that cannot run without an option.
OPTIONS = {"json_schema": {"schema": {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}}}


@settings(max_examples=budget(60))
@given(
    name=st.sampled_from(METRIC_NAMES),
    preds=st.lists(text, min_size=0, max_size=4),
    data=st.data(),
)
@counted("metrics: every metric on hostile text")
def test_every_metric(name: str, preds: list[str], data: st.DataObject) -> None:
    refs = data.draw(st.lists(reference, min_size=len(preds), max_size=len(preds)))
    metric = get_metric(name, OPTIONS.get(name))
    try:
        value = metric.score(preds, refs)
    except DataError as err:
        assert name in str(err) and "\n" not in str(err)
        return
    assert isinstance(value, float)
    assert not math.isnan(value) or not preds, f"{name} gave NaN"
    if metric.per_example is not None:
        for score in metric.scores(preds, refs):
            assert isinstance(score, float | int) and not math.isnan(score)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_every_metric_on_empty_and_huge(name: str) -> None:
    metric = get_metric(name, OPTIONS.get(name))
    with pytest.raises(DataError, match=name):
        metric.score([], [])
    big = "word 12 " * 25_000  # 50,000 tokens: ROUGE-L's LCS table over these would need tens of GB
    try:
        value = metric.score([big, "", "\x1b[31m\x00"], [big, "x 1", "\u202e 2"])
    except DataError as err:  # numeric_match: a reference without a number
        assert name in str(err)
        return
    assert isinstance(value, float) and not math.isnan(value)


@pytest.mark.parametrize("name", ["json_valid", "json_schema"])
def test_json_metrics_on_deep_nesting(name: str) -> None:
    # A model that emits 100,000 '[' used to crash the eval with RecursionError; it is simply not valid JSON.
    assert (
        get_metric(name, OPTIONS.get(name)).score(["[" * 100_000, "```json\n" + "[" * 100_000 + "\n```"], ["x", "y"])
        == 0.0
    )
