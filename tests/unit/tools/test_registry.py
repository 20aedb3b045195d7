"""Tools from typed functions and from schema files: the JSON schema a model sees, docstrings, BFCL's loose types."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from tailorlm.errors import ConfigError
from tailorlm.tools.registry import ToolRegistry, normalize_schema, parse_docstring, tool
from tailorlm.tools.types import Tool

pytestmark = pytest.mark.unit


class Place(BaseModel):
    """A place on the map."""

    city: str
    title: str = "-"  # a field named like the schema keyword we strip


def weather(city: str, days: int = 1, unit: Literal["c", "f"] = "c", verbose: bool = False) -> str:
    """Get the weather forecast for a city.

    Longer text that the model does not need.

    Args:
        city: The city name,
            e.g. "Paris".
        days (int): How many days ahead.
        unit: Temperature unit.

    Returns:
        The forecast.
    """
    return f"{city} {days} {unit} {verbose}"


def test_schema_from_type_hints_and_docstring() -> None:
    t = tool(weather)
    assert isinstance(t, Tool) and t.name == "weather"
    assert t.description == "Get the weather forecast for a city."
    p = t.parameters
    assert p["type"] == "object" and p["required"] == ["city"] and p["additionalProperties"] is False
    assert p["properties"]["city"] == {"type": "string", "description": 'The city name, e.g. "Paris".'}
    assert p["properties"]["days"] == {"type": "integer", "default": 1, "description": "How many days ahead."}
    assert p["properties"]["unit"]["enum"] == ["c", "f"]
    assert p["properties"]["verbose"]["type"] == "boolean"
    assert "title" not in json.dumps(p).replace('"title": {', "")  # only the Place field may be called title
    jsonschema.Draft202012Validator.check_schema(p)
    assert t.schema() == {
        "type": "function",
        "function": {"name": "weather", "description": t.description, "parameters": p},
    }


def test_optional_lists_and_nested_models_are_inlined() -> None:
    @tool(name="plan", description="Plan a trip.", timeout_s=3)
    def plan(stops: list[Place], budget: float | None = None, tags: list[str] | None = None) -> str:
        return ",".join(s.city for s in stops) + f" {budget}"

    p = plan.parameters
    assert plan.name == "plan" and plan.timeout_s == 3
    stop = p["properties"]["stops"]["items"]
    assert "$ref" not in json.dumps(p) and "$defs" not in p
    assert stop["type"] == "object" and stop["required"] == ["city"] and "title" in stop["properties"]
    assert {"type": "null"} in p["properties"]["budget"]["anyOf"]
    assert p["required"] == ["stops"]
    jsonschema.validate({"stops": [{"city": "Oslo"}], "budget": 2.5}, p)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"stops": [{"town": "Oslo"}]}, p)
    # The Tool's fn converts dicts into the function's own types before calling it.
    assert plan.fn(stops=[{"city": "Oslo"}, {"city": "Rome"}], budget=2) == "Oslo,Rome 2.0"
    assert plan.fn.__wrapped__.__name__ == "plan"


def test_numpy_docstring_and_var_args() -> None:
    doc = """Add numbers.

    Parameters
    ----------
    a : int
        First.
    b : int
        Second,
        continued.

    Returns
    -------
    int
    """
    assert parse_docstring(doc) == ("Add numbers.", {"a": "First.", "b": "Second, continued."})
    assert parse_docstring(None) == ("", {})

    def bad(*args: int) -> int:
        return 0

    with pytest.raises(TypeError, match=r"\*args"):
        tool(bad)


def test_registry_basics() -> None:
    reg = ToolRegistry()
    reg.register(weather)
    reg.register(Tool("other", "x", {"type": "object", "properties": {}}))
    assert reg.names() == ["weather", "other"] and "weather" in reg and "nope" not in reg
    assert reg.get("weather").fn is not None and reg.get("nope") is None
    assert [s["function"]["name"] for s in reg.schemas()] == ["weather", "other"]
    sub = reg.subset(["other", "missing"])
    assert sub.names() == ["other"] and len(reg) == 2


BFCL_FN = {
    "name": "math.hypot",
    "description": "Euclidean norm.",
    "parameters": {
        "type": "dict",
        "properties": {
            "x": {"type": "integer", "description": "x"},
            "scale": {"type": "float", "default": 1.0},
            "pair": {"type": "tuple", "items": {"type": "float"}},
            "extra": {"type": "any"},
            "opts": {"type": "dict", "properties": {"name": {"type": "String"}}},
        },
        "required": ["x"],
    },
}


def test_normalize_schema_maps_bfcl_types_recursively() -> None:
    n = normalize_schema(BFCL_FN["parameters"])
    assert n["type"] == "object"
    props = n["properties"]
    assert props["scale"] == {"type": "number", "default": 1.0}
    assert props["pair"] == {"type": "array", "items": {"type": "number"}}
    assert props["extra"] == {}
    assert props["opts"]["type"] == "object" and props["opts"]["properties"]["name"] == {"type": "string"}
    assert BFCL_FN["parameters"]["type"] == "dict"  # the input is not changed
    jsonschema.Draft202012Validator.check_schema(n)
    jsonschema.validate({"x": 3, "scale": 2, "pair": [1, 2.5], "extra": None}, n)
    assert normalize_schema({"type": ["float", "null"]}) == {"type": ["number", "null"]}


def test_from_schemas_accepts_openai_and_bfcl_shapes() -> None:
    openai = {"type": "function", "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}}}
    reg = ToolRegistry.from_schemas([openai, BFCL_FN])
    assert reg.names() == ["f", "math.hypot"]
    assert reg.get("math.hypot").fn is None
    assert reg.get("math.hypot").parameters["properties"]["scale"]["type"] == "number"
    with pytest.raises(ConfigError, match=r"tools\[1\]: field 'name'"):
        ToolRegistry.from_schemas([openai, {"description": "no name"}])


def test_from_schema_file(tmp_path) -> None:
    j = tmp_path / "tools.json"
    j.write_text(json.dumps([BFCL_FN]))
    assert ToolRegistry.from_schema_file(j).names() == ["math.hypot"]
    y = tmp_path / "tools.yaml"
    y.write_text(
        "tools:\n  - name: g\n    description: G.\n    parameters: {type: dict, properties: {a: {type: float}}}\n"
    )
    assert ToolRegistry.from_schema_file(y).get("g").parameters["properties"]["a"] == {"type": "number"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: ok\n- name: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml\[1\]: field 'name'"):
        ToolRegistry.from_schema_file(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ConfigError, match=r"broken\.json:1:3: invalid JSON"):
        ToolRegistry.from_schema_file(broken)
    with pytest.raises(ConfigError, match="expected a list"):
        (tmp_path / "d.json").write_text("{}")
        ToolRegistry.from_schema_file(tmp_path / "d.json")
    with pytest.raises(ConfigError, match="cannot read"):
        ToolRegistry.from_schema_file(tmp_path / "missing.json")


def test_parameter_names_that_shadow_pydantic_and_annotated_descriptions() -> None:
    def f(json: str, copy: Annotated[int, Field(description="How many.", ge=1)], model_name: str = "m", anything=None):
        """F."""
        return f"{json} {copy} {model_name} {anything}"

    t = tool(f)
    assert t.parameters["required"] == ["json", "copy"]
    assert t.parameters["properties"]["copy"] == {"type": "integer", "minimum": 1, "description": "How many."}
    assert t.parameters["properties"]["anything"] == {"default": None}
    assert t.fn(json="a", copy=2) == "a 2 m None" and t.fn("b", 3, anything=[1]) == "b 3 m [1]"


def test_unresolvable_hints_are_a_clear_error() -> None:
    from collections import OrderedDict  # known only here: the string hint cannot resolve

    def g(x: OrderedDict) -> None:
        """G."""

    with pytest.raises(TypeError, match="cannot resolve its type hints"):
        tool(g)
