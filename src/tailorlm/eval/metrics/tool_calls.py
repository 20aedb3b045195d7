"""Tool-call metrics: BFCL's AST match of predicted calls against possible answers, and JSON-schema validity.

Reference: Patil et al., "The Berkeley Function Calling Leaderboard" (BFCL), 2024, and its checker in
https://github.com/ShishirPatil/gorilla (``berkeley-function-call-leaderboard``, ``ast_checker.py``). BFCL grades a
call by its abstract syntax tree rather than by running it: the function name must match, every required argument
must be there, every given argument must be declared and expected, and each value must have the declared type and
be one of the allowed values. This module re-implements those rules (our code, their semantics):

- **types**: the value's Python type must be the declared one, exactly (``True`` is not an integer); an ``int``
  passes for a ``float`` (Python would convert it), a ``float`` never passes for an ``int``. When the allowed values
  have another type than the declared one (BFCL writes a variable name as a string), a value of that type is taken
  as a variable and compared exactly;
- **strings** compare after BFCL's standardization: lower case, the characters `` ,./-_*^`` removed and ``'`` read
  as ``"``, so "April 1, 2024" matches "april 1 2024". The same applies to strings inside lists and dicts;
- **optional arguments**: ``""`` among the allowed values means the argument may be left out;
- **dicts** match a possible-answer dict key by key (``{key: [allowed]}``), recursively; **lists of dicts** match
  element by element, in order; other lists compare elementwise after standardization;
- **categories**: ``simple`` wants exactly one call; ``multiple`` one call of the right function among several;
  ``parallel`` and ``parallel_multiple`` the same number of calls as expected, matched in any order; ``irrelevance``
  wants no call at all.

Deviations, all toward fewer false negatives and none toward accepting a wrong call: parallel calls are matched by
a full bipartite matching (upstream matches greedily, so one ambiguous call can fail a right answer); array items
also get the int→float allowance; a name with ``_`` for ``.`` matches (upstream allows it for APIs whose function
names cannot hold dots); a schema type of ``any`` (or none) constrains nothing. A malformed call block counts as a
call, so it fails an irrelevance question (upstream counts undecodable output as "no call").

The schemas may be BFCL's Python dialect (``dict``, ``float``, ``tuple``) or standard JSON Schema, as the BFCL
converter (:mod:`tailorlm.data.bfcl`) writes them; either works for both metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tailorlm.errors import ConfigError

# Declared type → the Python type a JSON value must have. "number" is JSON Schema's float.
_PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
}
_STANDARDIZE = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True)
class ASTResult:
    """Whether the predicted calls match a possible answer, and why not when they don't."""

    correct: bool
    reason: str = ""


def standardize(text: str) -> str:
    """BFCL's string standardization: no spaces or ``,./-_*^``, lower case, ``'`` → ``"``."""
    return _STANDARDIZE.sub("", text).lower().replace("'", '"')


def _norm(value: Any) -> Any:
    """A comparable form: strings standardized, recursively; booleans tagged so that ``True`` never equals ``1``."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return standardize(value)
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _declared(schema: Mapping[str, Any] | None) -> type | None:
    kind = (schema or {}).get("type")
    return _PY_TYPES.get(kind) if isinstance(kind, str) else None


def _allowed_type(allowed: Sequence[Any]) -> type | None:
    """The type of the first allowed value that is not ``""``: what the answer key thinks the argument is."""
    return next((type(a) for a in allowed if a != ""), None)


def _type_error(value: Any, expected: type, schema: Mapping[str, Any], allowed: Sequence[Any]) -> str | None:
    """Why ``value`` does not have the declared type (arrays: their items too, one level as in BFCL), or None.

    An item whose type is not the declared item type passes when the allowed lists hold items of its type: BFCL's
    variable rule one level down, which also absorbs answer keys whose item type is wrong in the schema.
    """
    if type(value) is not expected and not (expected is float and type(value) is int):
        return f"expected {schema.get('type')}, got {type(value).__name__}"
    items = schema.get("items")
    item_type = _declared(items) if isinstance(items, Mapping) else None
    if expected is list and item_type is not None:
        hinted = {type(x) for a in allowed if isinstance(a, list) for x in a}
        for i, item in enumerate(value):
            if type(item) is item_type or (item_type is float and type(item) is int) or type(item) in hinted:
                continue
            return f"item {i}: expected {items.get('type')}, got {type(item).__name__}"  # type: ignore[union-attr]
    return None


def _dict_matches(value: Any, answer: Any, schema: Mapping[str, Any] | None) -> bool:
    """``value`` against one possible-answer dict ``{key: [allowed]}``: no unknown key, no missing required key."""
    if not isinstance(value, dict) or not isinstance(answer, dict):
        return False
    props = (schema or {}).get("properties") or {}
    for key, got in value.items():
        if key not in answer or not _value_allowed(got, answer[key], props.get(key)):
            return False
    return all(key in value or "" in allowed for key, allowed in answer.items())


def _is_answer_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, list) for v in value.values())


def _value_allowed(value: Any, allowed: Sequence[Any], schema: Mapping[str, Any] | None) -> bool:
    """Is ``value`` one of the ``allowed`` values? Possible-answer dicts (and lists of them) match structurally."""
    items = (schema or {}).get("items")
    for answer in allowed:
        if answer == "" and value != "":
            continue
        if isinstance(value, dict) and _is_answer_dict(answer):
            if _dict_matches(value, answer, schema):
                return True
        elif isinstance(value, list) and isinstance(answer, list) and answer and all(map(_is_answer_dict, answer)):
            item_schema = items if isinstance(items, Mapping) else None
            if len(value) == len(answer) and all(
                _dict_matches(v, a, item_schema) for v, a in zip(value, answer, strict=True)
            ):
                return True
        elif _norm(value) == _norm(answer):
            return True
    return False


def _check_argument(name: str, value: Any, allowed: list[Any], schema: Mapping[str, Any]) -> str | None:
    """Why one argument is wrong, or None (BFCL's type check, then its value check)."""
    expected = _declared(schema)
    hint = _allowed_type(allowed)
    if expected is float and type(value) is int:
        value = float(value)
    # BFCL writes a variable as a string for a non-string parameter: such a value is compared as it is.
    variable = expected is not None and hint is not None and hint is not expected and type(value) is hint
    if expected is not None and not variable and (err := _type_error(value, expected, schema, allowed)):
        return f"argument {name!r}: {err}"
    if not (value in allowed if variable else _value_allowed(value, allowed, schema)):
        shown = [a for a in allowed if a != ""]
        return f"argument {name!r}: {value!r} is not an allowed value (allowed: {shown!r})"
    return None


def _name_ok(name: Any, want: str) -> bool:
    return name == want or name == want.replace(".", "_")  # "_" for "." too: APIs whose names cannot hold a dot


def check_call(call: Mapping[str, Any], expected: Mapping[str, Any], function: Mapping[str, Any]) -> ASTResult:
    """One predicted call against one expected call ``{name: {argument: [allowed]}}`` (BFCL's simple checker).

    ``function`` is the expected function's description: a BFCL function or an OpenAI tool definition.
    """
    ((want, answer),) = expected.items()
    function = function["function"] if isinstance(function.get("function"), Mapping) else function
    name = call.get("name")
    if not _name_ok(name, want):
        return ASTResult(False, f"called {name!r}, expected {want!r}")
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return ASTResult(False, f"the arguments of {name!r} are not JSON")
    if not isinstance(arguments, dict):
        return ASTResult(False, f"the arguments of {name!r} are not a JSON object")
    params = function.get("parameters") or {}
    props = params.get("properties") or {}
    for required in params.get("required") or []:
        if required not in arguments:
            return ASTResult(False, f"missing required argument {required!r}")
    for arg, value in arguments.items():
        if arg not in props or arg not in answer:
            return ASTResult(False, f"unexpected argument {arg!r}")
        if err := _check_argument(arg, value, list(answer[arg]), props[arg]):
            return ASTResult(False, err)
    for arg, allowed in answer.items():
        if arg not in arguments and "" not in allowed:
            return ASTResult(False, f"missing argument {arg!r} (the answer does not allow leaving it out)")
    return ASTResult(True, "match")


def _functions(functions: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Name → function description, from BFCL functions or OpenAI tool definitions (``{"function": {...}}``)."""
    table = {}
    for f in functions:
        inner = f.get("function") if isinstance(f.get("function"), Mapping) else f
        if isinstance(inner, Mapping) and "name" in inner:
            table[str(inner["name"])] = inner
    return table


def _max_matching(ok: list[list[bool]]) -> int:
    """Size of a maximum bipartite matching (Kuhn's augmenting paths); rows are expected calls, columns predictions."""
    owner: dict[int, int] = {}

    def augment(row: int, seen: set[int]) -> bool:
        for col, fits in enumerate(ok[row]):
            if fits and col not in seen:
                seen.add(col)
                if col not in owner or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    return sum(augment(row, set()) for row in range(len(ok)))


def ast_match(
    calls: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]],
    functions: Sequence[Mapping[str, Any]],
    *,
    category: str,
) -> ASTResult:
    """Grade predicted ``calls`` (``[{"name", "arguments"}]``) against BFCL's possible answers, per ``category``.

    The category decides the rule as in BFCL (by substring): ``irrelevance`` (or ``relevance`` questions with no
    answer) wants no call; ``parallel*`` wants a one-to-one match in any order; ``multiple`` and ``simple`` want
    exactly one call. Raises ``ValueError`` when the answer names a function that is not among ``functions``.
    """
    if "irrelevance" in category:
        if calls:
            return ASTResult(False, f"called {calls[0].get('name')!r} though no tool fits")
        return ASTResult(True, "no call, as expected")
    table = _functions(functions)
    for entry in ground_truth:
        ((want, _),) = entry.items()
        if want not in table:
            raise ValueError(f"the possible answer calls {want!r}, which is not among the example's tools")
    if not calls:
        return ASTResult(False, "no tool call in the output")
    if len(calls) != len(ground_truth):
        return ASTResult(False, f"{len(calls)} call(s), expected {len(ground_truth)}")
    if "parallel" not in category:
        return check_call(calls[0], ground_truth[0], table[next(iter(ground_truth[0]))])
    results = [[check_call(c, e, table[next(iter(e))]) for c in calls] for e in ground_truth]
    if _max_matching([[r.correct for r in row] for row in results]) == len(ground_truth):
        return ASTResult(True, "match")
    # Explain the first expected call that nothing matches, with the reason of the call most likely meant for it:
    # one of the right function that matches no other expected call.
    spare = [not any(results[e][c].correct for e in range(len(results))) for c in range(len(calls))]
    for i, row in enumerate(results):
        if not any(r.correct for r in row):
            want = next(iter(ground_truth[i]))
            named = [c for c, call in enumerate(calls) if _name_ok(call.get("name"), want)]
            best = ([c for c in named if spare[c]] or named or [0])[0]
            return ASTResult(False, f"no call matches expected call {i}: {row[best].reason}")
    return ASTResult(False, "the calls cannot be paired one-to-one with the expected calls")


def parse_calls(text: str) -> list[dict[str, Any]] | None:
    """The calls in a model's output as ``[{"name", "arguments"}]``; None when the parser rejects the text.

    The parser (:func:`tailorlm.tools.calling.parse_tool_calls`, the format the models are prompted and trained
    with) is imported here, not at module import, so loading the metric registry does not load the tools package.
    """
    from tailorlm.tools.calling import parse_tool_calls

    try:
        _, calls = parse_tool_calls(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the stack, e.g. "[[[[..."
        return None
    return [{"name": c.name, "arguments": c.arguments} for c in calls]


def _meta(example: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = example.get("metadata")
    if not isinstance(meta, Mapping):
        raise ValueError("a tool-call metric needs metadata with 'tools' (and 'ground_truth' for tool_ast)")
    return meta


def _tools(meta: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = meta.get("tools", meta.get("functions"))
    if not isinstance(tools, list):
        raise ValueError("metadata.tools must be the list of tool definitions the model was given")
    return tools


def tool_ast_result(prediction: str, example: Mapping[str, Any]) -> ASTResult:
    """Parse ``prediction`` and grade it with :func:`ast_match` against ``example["metadata"]``."""
    meta = _meta(example)
    category = str(meta.get("category") or "simple")
    truth = meta.get("ground_truth") or []
    if not isinstance(truth, list):
        raise ValueError("metadata.ground_truth must be a list of {function: {argument: [allowed values]}}")
    if not truth and "irrelevance" not in category:
        category = "irrelevance"  # no possible answer: the right output is no call (BFCL's relevance rule)
    calls = parse_calls(prediction)
    if calls is None:
        return ASTResult(False, "the output could not be parsed")
    try:
        return ast_match(calls, truth, _tools(meta), category=category)
    except RecursionError:  # arguments nested deeper than the comparison can follow: not a plausible answer
        return ASTResult(False, "the arguments are nested too deeply")


def tool_ast(prediction: str, reference: Any, example: Mapping[str, Any]) -> float:
    """The ``tool_ast`` metric: 1.0 when the calls match a possible answer (irrelevance: when there is no call)."""
    return float(tool_ast_result(prediction, example).correct)


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Any:
    import jsonschema

    # Imported here: the metric registry should not pay for loading the data package.
    from tailorlm.data.bfcl import normalize_bfcl_schema

    schema = normalize_bfcl_schema(json.loads(schema_json))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ConfigError(f"invalid tool parameter schema for tool_call_valid: {e.message}") from e
    return cls(schema)


def call_valid(call: Mapping[str, Any], tools: Sequence[Mapping[str, Any]]) -> bool:
    """Does ``call`` name one of ``tools`` and carry a JSON object that validates against its parameters?"""
    function = _functions(tools).get(str(call.get("name")))
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return False
    if function is None or not isinstance(arguments, dict):
        return False
    schema = function.get("parameters") or {"type": "object"}
    return bool(_validator(json.dumps(schema, sort_keys=True)).is_valid(arguments))


def tool_call_valid(prediction: str, reference: Any, example: Mapping[str, Any]) -> float:
    """The ``tool_call_valid`` metric: 1.0 when the output's calls all parse, name a given tool and validate.

    An output with no call scores 1.0 only where no call is expected (irrelevance): elsewhere it failed to produce
    the call this metric is about. A schema that is itself invalid raises (the data's fault, not the model's).
    """
    meta = _meta(example)
    calls = parse_calls(prediction)
    if calls is None:
        return 0.0
    if not calls:
        return float("irrelevance" in str(meta.get("category", "")) or not meta.get("ground_truth"))
    tools = _tools(meta)
    try:
        return float(all(call_valid(c, tools) for c in calls))
    except RecursionError:  # arguments nested deeper than the validator can follow
        return 0.0


__all__ = [
    "ASTResult",
    "ast_match",
    "call_valid",
    "check_call",
    "parse_calls",
    "standardize",
    "tool_ast",
    "tool_ast_result",
    "tool_call_valid",
]
