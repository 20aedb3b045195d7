"""Convert Berkeley Function Calling Leaderboard (BFCL) data into canonical eval and chat records.

BFCL (Patil et al., "The Berkeley Function Calling Leaderboard", 2024; https://github.com/ShishirPatil/gorilla,
Apache-2.0) ships two JSON-lines files per category:

- the questions: ``{"id", "question": [[{"role", "content"}, ...], ...], "function": [{name, description,
  parameters}]}``, where ``parameters`` is a JSON schema in BFCL's Python dialect (``"dict"``, ``"float"``,
  ``"tuple"``, ``"any"``);
- the possible answers: ``{"id", "ground_truth": [{function name: {argument: [allowed values]}}, ...]}``, one
  entry per expected call; ``""`` among the allowed values means the argument may be left out. The irrelevance
  category has no answers: no tool fits, so the right output is no call at all.

Two conversions:

- :func:`bfcl_to_eval` keeps every allowed value, so the ``tool_ast`` metric
  (:mod:`tailorlm.eval.metrics.tool_calls`) can grade a prediction the way BFCL's AST checker does;
- :func:`bfcl_to_chat` picks one concrete answer per call (the first allowed value that is not ``""``; an
  argument whose only allowed value is ``""`` is left out) and writes it as an OpenAI assistant turn with
  ``tool_calls``, which ``tailor train sft`` renders in the chat template's native tool format. An irrelevance
  question becomes a plain-text answer, :data:`NO_TOOL_ANSWER`, so the model also learns when not to call.

Tool schemas are rewritten into standard JSON Schema (:func:`normalize_bfcl_schema`) because chat templates,
``jsonschema`` and constrained decoders only know the standard type names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tailorlm.data.records import validate_record
from tailorlm.data.split import split_indices
from tailorlm.errors import DataError

Target = Literal["eval", "chat"]

#: The assistant's answer to an irrelevance question in chat records: it names no tool and calls none.
NO_TOOL_ANSWER = "None of the available tools can do this."

#: The non-live Python categories this converter targets (others with the same layout convert too).
CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")

# BFCL's Python-flavoured type names → JSON Schema. "any" has no JSON Schema type: it becomes an empty schema.
_ID_SUFFIX = re.compile(r"_\d+$")


def normalize_bfcl_schema(schema: Any) -> Any:
    """A copy of ``schema`` in standard JSON Schema (``dict``→``object``, ``float``→``number``, ``tuple``→``array``,
    ``any``→ no type constraint): the registry's normalization, which every tool schema goes through."""
    from tailorlm.tools.registry import normalize_schema

    return normalize_schema(schema) if isinstance(schema, dict) else schema


def bfcl_tool(function: dict[str, Any]) -> dict[str, Any]:
    """One BFCL function description as an OpenAI tool definition with a standard JSON-schema ``parameters``."""
    parameters = normalize_bfcl_schema(function.get("parameters") or {"type": "object", "properties": {}})
    return {
        "type": "function",
        "function": {
            "name": function["name"],
            "description": function.get("description", ""),
            "parameters": parameters,
        },
    }


def _read_jsonl(path: str | Path, what: str) -> list[dict[str, Any]]:
    """BFCL files are JSON lines despite their ``.json`` suffix; a plain JSON list is accepted too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot read the BFCL {what} file {path}: {err.strerror or err}") from None
    if text.lstrip().startswith("["):
        rows = json.loads(text)
        numbered = list(enumerate(rows, 1))
    else:
        numbered = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                numbered.append((n, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{n}: not a JSON object ({err.msg})") from None
    for n, row in numbered:
        if not isinstance(row, dict) or "id" not in row:
            raise DataError(f"{path}:{n}: a BFCL {what} row must be an object with an 'id'")
    return [row for _, row in numbered]


def category_of(bfcl_id: str) -> str:
    """The category encoded in a BFCL id: ``"parallel_multiple_12"`` → ``"parallel_multiple"``."""
    return _ID_SUFFIX.sub("", bfcl_id)


def _messages(row: dict[str, Any], path: Path) -> list[dict[str, str]]:
    turns = row.get("question")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{path}: {row['id']}: 'question' must be a non-empty list of turns")
    # Each turn is a list of messages (older files sometimes hold a bare message list): flatten them in order.
    flat = [m for turn in turns for m in (turn if isinstance(turn, list) else [turn])]
    messages = []
    for m in flat:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise DataError(f"{path}: {row['id']}: every question message needs a string role and content")
        messages.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "user" for m in messages):
        raise DataError(f"{path}: {row['id']}: the question has no user message")
    return messages


def _answers(answers_path: str | Path | None) -> dict[str, list[dict[str, Any]]]:
    if answers_path is None:
        return {}
    out = {}
    for row in _read_jsonl(answers_path, "possible-answer"):
        truth = row.get("ground_truth")
        if not isinstance(truth, list) or not all(isinstance(c, dict) and len(c) == 1 for c in truth):
            raise DataError(f"{answers_path}: {row['id']}: ground_truth must be a list of {{function: arguments}}")
        out[str(row["id"])] = truth
    return out


def _load(
    questions_path: str | Path, answers_path: str | Path | None, category: str | None
) -> list[tuple[dict[str, Any], str, list[dict[str, Any]]]]:
    """``(question row, category, ground truth)`` per question; irrelevance questions expect no call."""
    questions = _read_jsonl(questions_path, "questions")
    answers = _answers(answers_path)
    out = []
    for row in questions:
        bfcl_id = str(row["id"])
        cat = category or category_of(bfcl_id)
        if "irrelevance" in cat:
            truth: list[dict[str, Any]] = []
        elif bfcl_id in answers:
            truth = answers[bfcl_id]
        else:
            where = f"in {answers_path}" if answers_path else "(no answers file given)"
            raise DataError(
                f"no possible answer for {bfcl_id} {where}",
                hint="pass --answers with the matching possible_answer/ file (irrelevance needs none)",
            )
        if not isinstance(row.get("function"), list) or not row["function"]:
            raise DataError(f"{questions_path}: {bfcl_id}: 'function' must be a non-empty list of functions")
        out.append((row, cat, truth))
    return out


def _skippable(allowed: list[Any]) -> bool:
    """An argument may be left out of the canonical answer when omission is allowed and nothing else is given."""
    return "" in allowed and all(v == "" or v is None for v in allowed)


def concrete_value(value: Any, schema: dict[str, Any] | None = None) -> Any:
    """One concrete argument value from an allowed value: nested possible-answer dicts (``{key: [allowed]}``)
    resolve key by key to their first usable value; lists of such dicts resolve element by element."""
    kind = (schema or {}).get("type")
    if isinstance(value, dict) and (kind in ("dict", "object") or all(isinstance(v, list) for v in value.values())):
        props = (schema or {}).get("properties") or {}
        return {k: concrete_value(_first(v), props.get(k)) for k, v in value.items() if not _skippable(v)}
    if isinstance(value, list) and kind in ("array", "tuple"):
        items = (schema or {}).get("items")
        item_kind = items.get("type") if isinstance(items, dict) else None
        if item_kind in ("dict", "object"):
            return [concrete_value(v, items) for v in value]
    return value


def _first(allowed: list[Any]) -> Any:
    """The first allowed value that is not ``""`` (nor ``None``, when omission is also allowed)."""
    usable = [v for v in allowed if v != ""]
    preferred = [v for v in usable if v is not None] if "" in allowed else usable
    return (preferred or usable or [""])[0]


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "float": (int, float),
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
}


def _fits(value: Any, schema: dict[str, Any] | None) -> bool:
    """Does ``value`` have the schema's declared top-level type? (No declared type: anything fits.)"""
    kind = (schema or {}).get("type")
    expected = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
    if expected is None:
        return True
    return isinstance(value, expected) and (expected is bool or not isinstance(value, bool))


def ground_truth_calls(truth: list[dict[str, Any]], functions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The canonical answer: ``[{"name", "arguments"}]`` with one concrete value per argument (see module doc).

    A few BFCL answers list, as optional, an argument the function does not declare or a value of the wrong type
    (``"venue": ["", true]`` for a string). Since leaving such an argument out is also allowed, it is left out, so
    every canonical answer validates against its tool's schema and passes BFCL's checker.
    """
    by_name = {f.get("name"): f for f in functions}
    calls = []
    for entry in truth:
        ((name, args),) = entry.items()
        props = ((by_name.get(name) or {}).get("parameters") or {}).get("properties") or {}
        arguments = {}
        for arg, allowed in args.items():
            if not isinstance(allowed, list) or _skippable(allowed):
                continue
            value = concrete_value(_first(allowed), props.get(arg))
            if "" in allowed and (arg not in props or not _fits(value, props[arg])):
                continue
            arguments[arg] = value
        calls.append({"name": name, "arguments": arguments})
    return calls


def bfcl_to_eval(
    questions_path: str | Path, answers_path: str | Path | None = None, category: str | None = None
) -> list[dict[str, Any]]:
    """Eval records (``input``, ``reference``, ``metadata``) for the ``tool_ast`` and ``tool_call_valid`` metrics.

    ``input`` is the last user message; a question of several messages keeps them all in ``metadata.messages``.
    ``reference`` is the canonical answer as JSON (``None`` for irrelevance), for people reading reports; the
    metrics grade against ``metadata.ground_truth``, which keeps every allowed value. ``category`` overrides the
    one read from each id (``simple_python_3`` → ``simple_python``).
    """
    path = Path(questions_path)
    records = []
    for row, cat, truth in _load(questions_path, answers_path, category):
        messages = _messages(row, path)
        metadata: dict[str, Any] = {
            "id": str(row["id"]),
            "bfcl_id": str(row["id"]),
            "category": cat,
            "tools": [bfcl_tool(f) for f in row["function"]],
            "ground_truth": truth,
        }
        if len(messages) > 1:
            metadata["messages"] = messages
        reference = json.dumps(ground_truth_calls(truth, row["function"]), ensure_ascii=False) if truth else None
        user = [m["content"] for m in messages if m["role"] == "user"][-1]
        records.append({"input": user, "reference": reference, "metadata": metadata})
    return _checked(records, "eval")


def bfcl_to_chat(
    questions_path: str | Path, answers_path: str | Path | None, category: str | None = None
) -> list[dict[str, Any]]:
    """Chat records: the question's messages, then the assistant's answer, with the tools in ``tools``.

    The answer is one OpenAI ``tool_calls`` turn (``content: null``; arguments as a JSON string, as the API sends
    them) holding every expected call, parallel ones included. For an irrelevance question it is the text
    :data:`NO_TOOL_ANSWER` ("None of the available tools can do this.") and no call.
    """
    path = Path(questions_path)
    records = []
    for row, cat, truth in _load(questions_path, answers_path, category):
        messages: list[dict[str, Any]] = list(_messages(row, path))
        if truth:
            tool_calls = [
                {
                    "id": f"call_{k}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)},
                }
                for k, c in enumerate(ground_truth_calls(truth, row["function"]))
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
        else:
            messages.append({"role": "assistant", "content": NO_TOOL_ANSWER})
        records.append(
            {
                "messages": messages,
                "tools": [bfcl_tool(f) for f in row["function"]],
                "metadata": {"bfcl_id": str(row["id"]), "category": cat},
            }
        )
    return _checked(records, "chat")


def _checked(records: list[dict[str, Any]], kind: Target) -> list[dict[str, Any]]:
    """Validate every record as the loaders would, so a converted file always passes ``tailor data validate``."""
    for i, record in enumerate(records):
        _, problems = validate_record(kind, record)
        if problems:
            field, message = problems[0]
            raise DataError(f"converted BFCL record {i} is not a valid {kind} record: {field}: {message}")
    return records


def split_bfcl(
    records: Sequence[dict[str, Any]], fraction: float, *, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(first, rest)``: ``fraction`` of the records, then the others, by the hash split of
    :func:`tailorlm.data.split.split_indices` keyed on the BFCL id, so an eval file and a chat file converted from
    the same questions with the same seed split into the same questions."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--split must be between 0 and 1 (exclusive), got {fraction}")
    keys = [str((r.get("metadata") or {}).get("bfcl_id", json.dumps(r, sort_keys=True))) for r in records]
    first, rest = split_indices(keys, eval_fraction=1.0 - fraction, seed=seed)
    return [records[i] for i in first], [records[i] for i in rest]


def convert_bfcl(
    questions_path: str | Path,
    answers_path: str | Path | None,
    to: Target,
    *,
    category: str | None = None,
    split: float | None = None,
    seed: int = 0,
    rest_to: Target | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What ``tailor data convert-bfcl`` writes: ``(records, rest)``; ``rest`` is empty without ``split``.

    With ``split``, the first list holds that fraction of the questions as ``to`` records and the second the
    remaining questions as ``rest_to`` records (default: ``to``), e.g. chat records to train on and eval
    records of the held-out questions.
    """
    convert = {"eval": bfcl_to_eval, "chat": bfcl_to_chat}
    if to not in convert or (rest_to is not None and rest_to not in convert):
        raise DataError(f"unknown target {to if to not in convert else rest_to!r}", hint="choose eval or chat")
    records = convert[to](questions_path, answers_path, category)
    if split is None:
        return records, []
    first, rest = split_bfcl(records, split, seed=seed)
    if rest_to is not None and rest_to != to:
        keep = {r["metadata"]["bfcl_id"] for r in rest}
        rest = [
            r for r in convert[rest_to](questions_path, answers_path, category) if r["metadata"]["bfcl_id"] in keep
        ]
    return first, rest
