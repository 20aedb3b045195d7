"""Structured-output metrics: is the output JSON, and does it satisfy a JSON Schema?

References: RFC 8259 (JSON) as parsed by Python's ``json``; JSON Schema validation by the ``jsonschema`` package,
with the draft the schema declares in ``$schema`` (2020-12 when it declares none).

Chat models often wrap JSON in a Markdown fence (```json ... ```); the first fenced block counts when the whole
output is not JSON, so the metric measures the structure and not the wrapping.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tailorlm.errors import ConfigError

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.DOTALL)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # a model that emits ``[[[[...`` deeper than the stack: not a usable document
        raise ValueError("JSON nested too deeply") from None


def extract_json(text: str) -> Any:
    """Parse the whole output as JSON, else the first fenced code block; raise ``ValueError`` when neither parses."""
    try:
        return _loads(text)
    except ValueError:  # also a number of over 4,300 digits (CPython's int-parsing guard)
        pass
    m = _FENCE.search(text)
    if m:
        try:
            return _loads(m.group(1))
        except ValueError:
            pass
    raise ValueError("no JSON document in the output")


def json_valid(text: str) -> float:
    """1.0 when :func:`extract_json` finds a JSON document, else 0.0."""
    try:
        extract_json(text)
    except ValueError:
        return 0.0
    return 1.0


def json_schema_valid(text: str, schema: dict[str, Any]) -> float:
    """1.0 when the output holds JSON that validates against ``schema``, else 0.0.

    An invalid *schema* is the user's mistake, not the model's, so it raises ``ConfigError`` instead of scoring 0.
    """
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ConfigError(f"invalid JSON Schema for the json_schema metric: {e.message}") from e
    try:
        value = extract_json(text)
    except ValueError:
        return 0.0
    return float(cls(schema).is_valid(value))
