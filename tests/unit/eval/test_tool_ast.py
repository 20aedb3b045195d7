"""BFCL-style AST matching (``tool_ast``) and schema validity (``tool_call_valid``) of tool calls.

Hand-made cases follow the rules of BFCL's checker (Patil et al.; gorilla's ``ast_checker.py``); the last test
scores the canonical answer of every real simple_python question, which checks the converter and the metric
together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tailorlm.data.bfcl import bfcl_to_eval, normalize_bfcl_schema
from tailorlm.errors import DataError
from tailorlm.eval.metrics import get_metric
from tailorlm.eval.metrics.tool_calls import ASTResult, ast_match, standardize, tool_ast_result

pytestmark = pytest.mark.unit

AREA = {
    "name": "calculate_triangle_area",
    "description": "Area of a triangle.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer"},
            "height": {"type": "float"},
            "unit": {"type": "string"},
        },
        "required": ["base", "height"],
    },
}
AREA_TRUTH = [{"calculate_triangle_area": {"base": [10], "height": [5.0], "unit": ["units", "cm", ""]}}]
WEATHER = {
    "name": "weather.get",
    "description": "Weather in a city.",
    "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def text(*calls: dict[str, Any]) -> str:
    """The canonical format a model emits: one ``<tool_call>`` block per call."""
    return "".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>\n" for c in calls)


def simple(*calls: dict[str, Any]) -> ASTResult:
    return ast_match(list(calls), AREA_TRUTH, [AREA], category="simple_python")


def test_right_call_matches() -> None:
    assert simple(call("calculate_triangle_area", base=10, height=5.0, unit="cm")) == ASTResult(True, "match")


def test_wrong_function_name_fails() -> None:
    result = simple(call("calculate_circle_area", base=10, height=5.0))
    assert not result.correct and "expected 'calculate_triangle_area'" in result.reason


def test_missing_required_argument_fails() -> None:
    result = simple(call("calculate_triangle_area", base=10))
    assert not result.correct and "missing required argument 'height'" in result.reason


def test_optional_argument_may_be_omitted_when_empty_string_is_allowed() -> None:
    assert simple(call("calculate_triangle_area", base=10, height=5.0)).correct
    truth = [{"calculate_triangle_area": {"base": [10], "height": [5.0], "unit": ["cm"]}}]  # no "": required here
    result = ast_match([call("calculate_triangle_area", base=10, height=5.0)], truth, [AREA], category="simple")
    assert not result.correct and "'unit'" in result.reason


def test_wrong_value_and_unexpected_argument_fail() -> None:
    assert "not an allowed value" in simple(call("calculate_triangle_area", base=11, height=5.0)).reason
    assert (
        "unexpected argument 'color'" in simple(call("calculate_triangle_area", base=10, height=5.0, color=1)).reason
    )


def test_int_for_float_is_allowed_but_float_for_int_is_not() -> None:
    assert simple(call("calculate_triangle_area", base=10, height=5)).correct  # height is a float
    result = simple(call("calculate_triangle_area", base=10.0, height=5.0))  # base is an integer
    assert not result.correct and "expected integer, got float" in result.reason
    assert not simple(call("calculate_triangle_area", base="10", height=5.0)).correct  # a string is no number


def test_bool_is_not_an_integer() -> None:
    truth = [{"f": {"n": [1]}}]
    fn = {"name": "f", "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}
    assert ast_match([call("f", n=1)], truth, [fn], category="simple").correct
    assert not ast_match([call("f", n=True)], truth, [fn], category="simple").correct


def test_strings_are_standardized_like_bfcl() -> None:
    assert standardize("April 1, 2024") == standardize("april 1 2024") == "april12024"
    assert standardize("New-York_City") == "newyorkcity"
    assert simple(call("calculate_triangle_area", base=10, height=5.0, unit="  C.M. ")).correct
    assert not simple(call("calculate_triangle_area", base=10, height=5.0, unit="meters")).correct


def test_lists_and_nested_dicts_compare_elementwise() -> None:
    fn = {
        "name": "query",
        "parameters": {
            "type": "dict",
            "properties": {
                "names": {"type": "array", "items": {"type": "string"}},
                "budget": {"type": "dict", "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}},
                "conditions": {"type": "array", "items": {"type": "dict"}},
            },
            "required": ["names"],
        },
    }
    truth = [
        {
            "query": {
                "names": [["Apple", "Microsoft"], ["AAPL", "MSFT"]],
                "budget": [{"min": [300], "max": [400, ""]}, ""],
                "conditions": [[{"field": ["age"], "op": [">"]}, {"field": ["job"], "op": ["="]}], ""],
            }
        }
    ]

    def grade(**arguments: Any) -> bool:
        return ast_match([call("query", **arguments)], truth, [fn], category="simple").correct

    assert grade(names=["apple", "MICROSOFT"])
    assert grade(names=["AAPL", "MSFT"], budget={"min": 300})  # max may be omitted inside the dict
    assert not grade(names=["MSFT", "AAPL"])  # order matters in a list
    assert not grade(names=["AAPL", "MSFT"], budget={"max": 400})  # min may not
    assert not grade(names=["AAPL", "MSFT"], budget={"min": 300, "extra": 1})
    assert grade(names=["AAPL", "MSFT"], conditions=[{"field": "Age", "op": ">"}, {"field": "job", "op": "="}])
    assert not grade(names=["AAPL", "MSFT"], conditions=[{"field": "job", "op": "="}, {"field": "age", "op": ">"}])


PLAY = {
    "name": "spotify.play",
    "parameters": {
        "type": "dict",
        "properties": {"artist": {"type": "string"}, "duration": {"type": "integer"}},
        "required": ["artist", "duration"],
    },
}
PLAY_TRUTH = [
    {"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
    {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}},
]


def test_parallel_calls_match_in_any_order() -> None:
    a, b = (
        call("spotify.play", artist="Taylor Swift", duration=20),
        call("spotify.play", artist="Maroon 5", duration=15),
    )
    assert ast_match([a, b], PLAY_TRUTH, [PLAY], category="parallel").correct
    assert ast_match([b, a], PLAY_TRUTH, [PLAY], category="parallel").correct


def test_parallel_with_a_call_missing_or_duplicated_fails() -> None:
    a = call("spotify.play", artist="Taylor Swift", duration=20)
    result = ast_match([a], PLAY_TRUTH, [PLAY], category="parallel")
    assert not result.correct and "1 call(s), expected 2" in result.reason
    assert not ast_match([a, a], PLAY_TRUTH, [PLAY], category="parallel").correct
    wrong = call("spotify.play", artist="Maroon 5", duration=16)
    result = ast_match([a, wrong], PLAY_TRUTH, [PLAY], category="parallel")
    assert not result.correct and "'duration'" in result.reason


def test_parallel_matching_is_one_to_one_not_greedy() -> None:
    # The first call fits both expected calls, the second only the first: a greedy pass would fail this.
    truth = [{"f": {"x": [1, 2]}}, {"f": {"x": [1]}}]
    fn = {"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}
    assert ast_match([call("f", x=1), call("f", x=2)], truth, [fn], category="parallel_multiple").correct


def test_multiple_picks_the_right_function_among_several() -> None:
    truth = [{"weather.get": {"city": ["Paris"]}}]
    tools = [AREA, WEATHER]
    assert ast_match([call("weather.get", city="paris")], truth, tools, category="multiple").correct
    assert ast_match([call("weather_get", city="Paris")], truth, tools, category="multiple").correct  # "." → "_"
    wrong = ast_match([call("calculate_triangle_area", base=1, height=2.0)], truth, tools, category="multiple")
    assert not wrong.correct and "expected 'weather.get'" in wrong.reason


def test_irrelevance_wants_no_call() -> None:
    assert ast_match([], [], [WEATHER], category="irrelevance").correct
    result = ast_match([call("weather.get", city="Paris")], [], [WEATHER], category="irrelevance")
    assert not result.correct and "no tool fits" in result.reason


def irrelevance_example() -> dict[str, Any]:
    return {"metadata": {"category": "irrelevance", "tools": [WEATHER], "ground_truth": []}}


def area_example() -> dict[str, Any]:
    return {"metadata": {"category": "simple_python", "tools": [AREA], "ground_truth": AREA_TRUTH}}


def test_metric_scores_text_in_the_canonical_format() -> None:
    metric = get_metric("tool_ast")
    assert metric.per_example is not None and not metric.needs_reference
    right = text(call("calculate_triangle_area", base=10, height=5))
    examples = [area_example(), area_example(), irrelevance_example(), irrelevance_example()]
    preds = [right, "The area is 25.", "No tool can tell the weather on Mars.", text(call("weather.get", city="Mars"))]
    assert metric.scores(preds, [None] * 4, examples) == [1.0, 0.0, 1.0, 0.0]


def test_unparseable_output_scores_zero() -> None:
    metric = get_metric("tool_ast")
    broken = '<tool_call>\n{"name": "calculate_triangle_area", "arguments": {"base": 10,\n</tool_call>'
    assert metric.scores([broken, "", "{{{"], [None] * 3, [area_example()] * 3) == [0.0, 0.0, 0.0]
    assert tool_ast_result(broken, irrelevance_example()).correct is False  # a broken call is still a call


def test_hostile_outputs_score_zero_without_crashing() -> None:
    deep = "[" * 100_000
    nested = (
        '<tool_call>{"name": "calculate_triangle_area", "arguments": {"base": '
        + "[" * 900
        + "]" * 900
        + "}}</tool_call>"
    )
    preds = [deep, nested, "{" * 2000, "9" * 5000]
    for name in ("tool_ast", "tool_call_valid"):
        assert get_metric(name).scores(preds, [None] * 4, [area_example()] * 4) == [0.0] * 4


def test_arguments_as_json_string_are_accepted() -> None:
    as_string = {"name": "calculate_triangle_area", "arguments": json.dumps({"base": 10, "height": 5.0})}
    assert simple(as_string).correct
    assert not simple({"name": "calculate_triangle_area", "arguments": "base=10"}).correct


def test_answer_naming_an_unknown_tool_is_a_data_error() -> None:
    example = {"metadata": {"category": "simple", "tools": [WEATHER], "ground_truth": AREA_TRUTH}}
    with pytest.raises(DataError, match="not among the example's tools"):
        get_metric("tool_ast").scores([text(call("weather.get", city="x"))], [None], [example])


def test_tool_call_valid_checks_names_and_schemas() -> None:
    metric = get_metric("tool_call_valid")
    ok = text(call("calculate_triangle_area", base=10, height=5))
    bad_type = text(call("calculate_triangle_area", base="ten", height=5))
    missing = text(call("calculate_triangle_area", base=10))
    unknown = text(call("no_such_tool", base=10, height=5))
    preds = [ok, bad_type, missing, unknown, "no call", "no call"]
    examples = [area_example()] * 5 + [irrelevance_example()]
    assert metric.scores(preds, [None] * 6, examples) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_normalize_bfcl_schema_maps_python_types() -> None:
    schema = {
        "type": "dict",
        "properties": {
            "x": {"type": "float"},
            "pair": {"type": "tuple", "items": {"type": "integer"}},
            "anything": {"type": "any"},
            "nested": {"type": "array", "items": {"type": "dict", "properties": {"v": {"type": "float"}}}},
        },
    }
    out = normalize_bfcl_schema(schema)
    assert out["type"] == "object" and out["properties"]["x"] == {"type": "number"}
    assert out["properties"]["pair"] == {"type": "array", "items": {"type": "integer"}}
    assert out["properties"]["anything"] == {}
    nested = out["properties"]["nested"]["items"]
    assert nested["type"] == "object" and nested["properties"] == {"v": {"type": "number"}}
    assert normalize_bfcl_schema(out) == out and schema["type"] == "dict"  # idempotent, input untouched


def test_every_simple_python_answer_scores_one(shared_data: Path) -> None:
    """The canonical answer of every real question, as model text, is a perfect score: converter and metric agree."""
    bfcl = shared_data / "bfcl"
    records = bfcl_to_eval(
        bfcl / "BFCL_v4_simple_python.json", bfcl / "possible_answer" / "BFCL_v4_simple_python.json"
    )
    assert len(records) == 400
    preds = ["".join(text(c) for c in json.loads(r["reference"])) for r in records]
    refs = [None] * len(records)
    scores = get_metric("tool_ast").scores(preds, refs, records)
    failed = [
        (r["metadata"]["bfcl_id"], tool_ast_result(p, r).reason)
        for p, r, s in zip(preds, records, scores, strict=True)
        if s < 1
    ]
    assert failed == []
    assert get_metric("tool_call_valid").score(preds, refs, records) == 1.0
