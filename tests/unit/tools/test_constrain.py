"""Constraints: validation, BFCL schema normalization, grammars, and the compiled-grammar cache."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from tailorlm.errors import ConfigError
from tailorlm.models.engines.base import GenerationParams, Request, request_constraint
from tailorlm.tools.constrain import (
    Constraint,
    as_constraint,
    batch_logits_processor,
    cache_info,
    compiled_matcher,
    grammar,
    logits_processor,
    normalize_schema,
    tool_call_schema,
)

TOOL = {
    "type": "function",
    "function": {
        "name": "area",
        "description": "Area of a triangle.",
        "parameters": {
            "type": "dict",
            "properties": {"base": {"type": "integer"}, "unit": {"type": "string"}},
            "required": ["base"],
        },
    },
}


def _accepts(matcher: Any, tokenizer: Any, text: str) -> bool:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return matcher.validate_tokens(ids) == len(ids) and matcher.consume_tokens(ids) and matcher.is_accepting()


def test_each_type_needs_its_field() -> None:
    assert Constraint(type="json_object").schema_ is None
    for bad in (
        {"type": "json_schema"},
        {"type": "regex", "pattern": ""},
        {"type": "choice", "choices": []},
        {"type": "tool_calls", "tools": []},
        {"type": "tool_calls", "tools": [{"type": "function", "function": {"description": "no name"}}]},
    ):
        with pytest.raises(ValidationError):
            Constraint.model_validate(bad)
    # tool_calls without tools is a template: each request (an eval record) brings its own.
    assert Constraint(type="tool_calls").tools is None
    with pytest.raises(ValidationError):  # unknown keys are errors, as in every config
        Constraint.model_validate({"type": "regex", "pattern": "a", "regexp": "b"})
    with pytest.raises(ValidationError):
        Constraint.model_validate({"type": "tool_calls", "tools": [TOOL], "mode": "sometimes"})


def test_schema_alias_round_trips_through_json() -> None:
    c = Constraint.model_validate({"type": "json_schema", "schema": {"type": "object"}})
    assert c.schema_ == {"type": "object"} and Constraint(type="json_schema", schema_={"type": "object"}) == c
    dumped = c.model_dump(mode="json")
    assert dumped["schema"] == {"type": "object"} and "schema_" not in dumped
    params = GenerationParams(constraint=c)
    # GenerationParams goes into cache keys and system.yaml: it must survive JSON and come back equal.
    assert GenerationParams.model_validate(json.loads(params.model_dump_json())) == params
    assert as_constraint(dumped) == c and as_constraint(None) is None and as_constraint(c) is c


def test_key_is_stable_and_distinguishes() -> None:
    a = Constraint(type="regex", pattern="[0-9]+")
    assert a.key() == Constraint.model_validate({"pattern": "[0-9]+", "type": "regex"}).key()
    assert a.key() != Constraint(type="regex", pattern="[0-9]*").key()
    auto, required = (Constraint(type="tool_calls", tools=[TOOL], mode=m) for m in ("auto", "required"))
    assert auto.key() != required.key()


def test_request_constraint_wins_over_the_calls() -> None:
    call, own = Constraint(type="json_object"), Constraint(type="choice", choices=["a"])
    params = GenerationParams(constraint=call)
    assert request_constraint("hi", params) == call
    assert request_constraint(Request(prompt="x", constraint=own), params) == own
    assert request_constraint(Request(prompt="x"), GenerationParams()) is None


def test_normalize_schema_makes_bfcl_types_standard() -> None:
    bfcl = {
        "type": "dict",
        "properties": {
            "x": {"type": "float"},
            "pair": {"type": "tuple", "items": {"type": "integer"}},
            "anything": {"type": "any", "description": "d"},
            "nested": {"type": "dict", "properties": {"y": {"type": "array", "items": {"type": "float"}}}},
            "type": {"type": "String"},  # a property called "type" is not a type keyword
        },
    }
    out = normalize_schema(bfcl)
    assert out["type"] == "object"
    props = out["properties"]
    assert props["x"] == {"type": "number"} and props["pair"]["type"] == "array"
    assert props["anything"] == {"description": "d"}
    assert props["nested"]["type"] == "object" and props["nested"]["properties"]["y"]["items"] == {"type": "number"}
    assert props["type"] == {"type": "string"}
    assert normalize_schema({"type": ["float", "null"]}) == {"type": ["number", "null"]}
    assert bfcl["type"] == "dict"  # the input is left alone


def test_tool_call_schema_pins_the_name_and_closes_the_arguments() -> None:
    schema = tool_call_schema(TOOL)
    assert schema["properties"]["name"] == {"const": "area"}
    args = schema["properties"]["arguments"]
    assert args["type"] == "object" and args["additionalProperties"] is False and args["required"] == ["base"]
    bare = tool_call_schema({"name": "ping"})  # a BFCL-style definition without parameters
    assert bare["properties"]["arguments"]["type"] == "object"


def test_tool_call_grammars_accept_the_block_format(tiny_tokenizer: Any) -> None:
    call = '<tool_call>\n{"name": "area", "arguments": {"base": 10, "unit": "cm"}}\n</tool_call>'
    required = Constraint(type="tool_calls", tools=[TOOL], mode="required")
    auto = Constraint(type="tool_calls", tools=[TOOL], mode="auto")
    assert _accepts(compiled_matcher(required, tiny_tokenizer), tiny_tokenizer, call + "\n" + call)
    assert not _accepts(compiled_matcher(required, tiny_tokenizer), tiny_tokenizer, "plain text")
    single = Constraint(type="tool_calls", tools=[TOOL], mode="required", parallel=False)
    assert _accepts(compiled_matcher(single, tiny_tokenizer), tiny_tokenizer, call)
    assert not _accepts(compiled_matcher(single, tiny_tokenizer), tiny_tokenizer, call + "\n" + call)
    assert _accepts(compiled_matcher(auto, tiny_tokenizer), tiny_tokenizer, "plain text, no call")
    assert _accepts(compiled_matcher(auto, tiny_tokenizer), tiny_tokenizer, "Sure. " + call)
    for wrong in (
        call.replace("area", "volume"),  # not a tool
        call.replace('"base": 10', '"base": "ten"'),  # wrong type
        call.replace(', "unit": "cm"', ', "color": "red"'),  # an argument the tool does not have
    ):
        assert not _accepts(compiled_matcher(auto, tiny_tokenizer), tiny_tokenizer, wrong)


def test_choice_literals_are_escaped(tiny_tokenizer: Any) -> None:
    c = Constraint(type="choice", choices=['say "hi"\n', "a|b"])
    assert "start:" in grammar(c)
    assert _accepts(compiled_matcher(c, tiny_tokenizer), tiny_tokenizer, 'say "hi"\n')
    assert _accepts(compiled_matcher(c, tiny_tokenizer), tiny_tokenizer, "a|b")
    assert not _accepts(compiled_matcher(c, tiny_tokenizer), tiny_tokenizer, "a")


def test_grammars_compile_once_per_constraint_and_tokenizer(tiny_tokenizer: Any) -> None:
    c = Constraint(type="regex", pattern="[a-z]{2}[0-9]")
    before = cache_info(tiny_tokenizer)
    first = compiled_matcher(c, tiny_tokenizer)
    again = compiled_matcher(Constraint.model_validate(c.model_dump()), tiny_tokenizer)  # an equal constraint
    after = cache_info(tiny_tokenizer)
    assert after["misses"] == before["misses"] + 1 and after["hits"] == before["hits"] + 1
    # Each use gets its own copy: advancing one matcher leaves the other at the start.
    assert _accepts(first, tiny_tokenizer, "ab1") and _accepts(again, tiny_tokenizer, "cd2")
    batch_logits_processor([c, None, c], tiny_tokenizer)
    assert cache_info(tiny_tokenizer)["misses"] == after["misses"]
    assert batch_logits_processor([None, None], tiny_tokenizer) is None
    assert logits_processor(c, tiny_tokenizer) is not None


def test_a_grammar_that_does_not_compile_is_a_config_error(tiny_tokenizer: Any) -> None:
    with pytest.raises(ConfigError, match="regex constraint does not compile"):
        compiled_matcher(Constraint(type="regex", pattern="(unclosed"), tiny_tokenizer)


def test_the_processor_masks_only_constrained_rows(tiny_tokenizer: Any) -> None:
    import torch

    processor = batch_logits_processor([Constraint(type="choice", choices=["7"]), None], tiny_tokenizer)
    assert processor is not None
    vocab = len(tiny_tokenizer) + 16  # models often pad their logits past the tokenizer's vocabulary
    scores = processor(torch.zeros((2, 3), dtype=torch.long), torch.zeros((2, vocab)))
    seven = tiny_tokenizer("7", add_special_tokens=False)["input_ids"][0]
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [seven]
    assert torch.isfinite(scores[1]).all()
