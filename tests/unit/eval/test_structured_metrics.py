"""JSON and JSON-Schema validity of outputs."""

from __future__ import annotations

import pytest

from tailorlm.errors import ConfigError
from tailorlm.eval.metrics.structured import extract_json, json_schema_valid, json_valid

pytestmark = pytest.mark.unit

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
}


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ('{"a": 1}', 1.0),
        ("  [1, 2]\n", 1.0),
        ('Sure:\n```json\n{"a": 1}\n```\nDone.', 1.0),  # fenced block
        ('```\n{"a": 1}\n```', 1.0),  # fence without a language tag
        ("{'a': 1}", 0.0),  # Python dict, not JSON
        ('{"a": 1', 0.0),
        ('Here: {"a": 1}', 0.0),  # bare JSON inside prose does not count: the format was not followed
        ("", 0.0),
    ],
)
def test_json_valid(text: str, valid: float) -> None:
    assert json_valid(text) == valid


def test_extract_json_prefers_whole_text_then_first_fence() -> None:
    assert extract_json('```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```') == {"a": 1}
    with pytest.raises(ValueError):
        extract_json("nothing")


def test_json_schema_valid() -> None:
    assert json_schema_valid('{"name": "Ada", "age": 36}', SCHEMA) == 1.0
    assert json_schema_valid('```json\n{"name": "Ada"}\n```', SCHEMA) == 1.0
    assert json_schema_valid('{"age": 36}', SCHEMA) == 0.0  # missing required
    assert json_schema_valid('{"name": "Ada", "age": -1}', SCHEMA) == 0.0  # minimum
    assert json_schema_valid("not json", SCHEMA) == 0.0


def test_invalid_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid JSON Schema"):
        json_schema_valid("{}", {"type": "no-such-type"})


def test_registry_json_metrics_need_no_reference() -> None:
    from tailorlm.eval.metrics import compute_metrics, get_metric

    preds = ['{"name": "Ada"}', '{"age": 3}', "oops"]
    refs = [None, None, None]
    # json_valid: 1, 1, 0 → 2/3; json_schema: 1, 0 (missing name), 0 → 1/3
    out = compute_metrics(["json_valid", "json_schema"], preds, refs, options={"json_schema": {"schema": SCHEMA}})
    assert out == {"json_valid": pytest.approx(2 / 3), "json_schema": pytest.approx(1 / 3)}
    # the schema can also come from each example's metadata
    examples = [{"metadata": {"schema": SCHEMA}}] * 3
    assert get_metric("json_schema").scores(preds, refs, examples) == [1.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="needs a schema"):
        get_metric("json_schema").scores(preds, refs)
