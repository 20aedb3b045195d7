"""Schema formats: which keys a row has, how that maps to a canonical record, and how we detect it.

A *format* is a row schema (OpenAI messages, Alpaca, ShareGPT, ...), independent of the *container* it is
stored in (JSONL, a JSON list, CSV/TSV, Parquet). Each format names its required and optional keys and
converts one raw row into a canonical dict, reporting problems under the field names the user wrote.

Detection (``detect_format``) is deterministic and looks only at keys:
1. plain-text files and folders are always ``text``;
2. otherwise take the keys of the first row that parses as an object (the header, for CSV/TSV);
3. the candidates are the formats whose required keys are all present (and, if ``kind`` is given, that
   produce that kind);
4. the candidate that explains the most keys (required + optional) wins; a tie is ambiguous, no candidate is
   unknown, and both are a ``DataError`` that lists the formats and the keys found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tailorlm.data.readers import parse_json
from tailorlm.data.records import MESSAGE_KEYS, Kind
from tailorlm.errors import DataError

FormatName = Literal["openai", "alpaca", "sharegpt", "preference", "hh", "binary", "text", "classification", "eval"]
FORMAT_NAMES: tuple[FormatName, ...] = get_args(FormatName)
Extra = Literal["forbid", "ignore", "metadata"]

Problems = list[tuple[str, str]]

# ShareGPT speakers → OpenAI roles. ``user``/``assistant``/``tool`` are accepted too: many exports use them.
SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
_SHAREGPT_SPEAKERS = "human, gpt, system, function_call, observation"

# Keys whose value is a list or object; in CSV/TSV, where every cell is a string, these cells are parsed as JSON.
_JSON_KEYS = frozenset({"messages", "conversations", "tools", "history", "metadata"})
_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Context:
    """How to convert rows: what to do with unknown keys, and whether values carry JSON types (not CSV)."""

    extra: Extra = "forbid"
    typed: bool = True


@dataclass(frozen=True)
class FormatSpec:
    name: FormatName
    kind: Kind
    required: tuple[str, ...]
    optional: tuple[str, ...]
    description: str
    convert: Callable[[dict[str, Any], Context], tuple[dict[str, Any] | None, Problems]]

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.required + self.optional)

    def signature(self) -> str:
        opt = f" [{', '.join(self.optional)}]" if self.optional else ""
        return f"{self.name} ({', '.join(self.required)}{opt})"


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(row: dict[str, Any], key: str, problems: Problems, *, required: bool, field: str | None = None) -> Any:
    """Read a string field, recording a problem if it is missing, not a string, or (when required) blank."""
    field = field or key
    value = row.get(key)
    if value is None:
        if required:
            problems.append((field, "missing required field"))
        return None
    if not isinstance(value, str):
        problems.append((field, f"expected a string, got {_describe(value)}"))
        return None
    if required and not value.strip():
        problems.append((field, "empty text"))
    return value


def _filter_messages(value: Any, ctx: Context) -> Any:
    """With ``extra="ignore"``, unknown keys inside messages are dropped too (e.g. OpenAI's ``weight``)."""
    if ctx.extra == "forbid" or not isinstance(value, list):
        return value
    return [{k: v for k, v in m.items() if k in MESSAGE_KEYS} if isinstance(m, dict) else m for m in value]


def _openai(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    out = {k: row[k] for k in ("messages", "tools", "metadata") if k in row}
    if "messages" in out:
        out["messages"] = _filter_messages(out["messages"], ctx)
    return out, []


def _alpaca(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    problems: Problems = []
    instruction = _text(row, "instruction", problems, required=True)
    extra_input = _text(row, "input", problems, required=False)
    output = _text(row, "output", problems, required=True)
    system = _text(row, "system", problems, required=False)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    history = row.get("history") or []
    if not isinstance(history, list):
        problems.append(("history", f"expected a list of [instruction, response] pairs, got {_describe(history)}"))
        history = []
    for i, pair in enumerate(history):
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) and t.strip() for t in pair):
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        else:
            problems.append((f"history[{i}]", "expected a pair [instruction, response] of non-empty strings"))
    if problems:
        return None, problems
    # The Alpaca convention: the optional input follows the instruction after a blank line.
    prompt = f"{instruction}\n\n{extra_input}" if extra_input and extra_input.strip() else instruction
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": messages}, []


def _sharegpt_turn(i: int, turn: Any, ctx: Context, problems: Problems) -> dict[str, Any] | None:
    where = f"conversations[{i}]"
    if not isinstance(turn, dict):
        problems.append((where, f"expected an object with 'from' and 'value', got {_describe(turn)}"))
        return None
    if ctx.extra == "forbid":
        problems += [(f"{where}.{k}", "unknown field") for k in turn if k not in ("from", "value")]
    speaker = turn.get("from")
    value = _text(turn, "value", problems, required=True, field=f"{where}.value")
    if speaker is None:
        problems.append((f"{where}.from", "missing required field"))
        return None
    if not isinstance(speaker, str) or speaker not in SHAREGPT_ROLES:  # a list or object is not a speaker
        problems.append((f"{where}.from", f"got {speaker!r}, expected one of {_SHAREGPT_SPEAKERS}"))
        return None
    if value is None:
        return None
    if speaker == "function_call":
        # The value is a JSON object {"name", "arguments"}; canonically that is an assistant tool call.
        try:
            call = parse_json(value)
        except ValueError:  # bad syntax, or valid JSON Python cannot hold (see ``parse_json``)
            call = None
        if not (isinstance(call, dict) and "name" in call):
            problems.append((f"{where}.value", "a function_call value must be a JSON object with 'name'"))
            return None
        function = {"name": call["name"], "arguments": call.get("arguments", {})}
        return {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": function}]}
    return {"role": SHAREGPT_ROLES[speaker], "content": value}


def _sharegpt(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    problems: Problems = []
    system = _text(row, "system", problems, required=False)
    conversations = row.get("conversations")
    if not isinstance(conversations, list):
        problems.append(("conversations", f"expected a list of turns, got {_describe(conversations)}"))
        conversations = []
    messages = [{"role": "system", "content": system}] if system else []
    messages += [m for i, t in enumerate(conversations) if (m := _sharegpt_turn(i, t, ctx, problems))]
    tools = row.get("tools")
    if isinstance(tools, str):  # LLaMA-Factory stores the tool schemas as a JSON string
        try:
            tools = parse_json(tools)
        except ValueError:
            problems.append(("tools", "expected a list of tool schemas (or a JSON string of one)"))
    if problems:
        return None, problems
    return {"messages": messages} | ({"tools": tools} if tools is not None else {}), []


def _preference(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    return {k: _filter_messages(row.get(k), ctx) for k in ("prompt", "chosen", "rejected") if k in row}, []


# Anthropic HH-RLHF (Bai et al. 2022, "Training a Helpful and Harmless Assistant with RLHF") stores each side of a
# pair as a whole transcript, "\n\nHuman: …\n\nAssistant: …", the two sides repeating the conversation so far.
_HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_messages(text: str, field: str, problems: Problems) -> list[dict[str, str]] | None:
    """One transcript → messages, or ``None`` with a problem under ``field``.

    Consecutive turns of one speaker are joined into one message (a blank line between them): HH has a few
    ("Assistant: … Assistant: …"), and the chat templates of many models refuse two turns of one role in a row.
    """
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        problems.append((field, "not an Anthropic-HH transcript: expected it to start with '\\n\\nHuman:'"))
        return None
    turns = list(zip(parts[1::2], (p.strip() for p in parts[2::2]), strict=True))
    empty = [i for i, (_, content) in enumerate(turns, start=1) if not content]
    if empty:
        i = empty[0]
        where = "the final Assistant turn" if i == len(turns) else f"turn {i} ({turns[i - 1][0]})"
        problems.append((field, f"{where} is empty"))
        return None
    if turns[0][0] != "Human":
        problems.append((field, "no Human turn before the first Assistant turn"))
        return None
    if turns[-1][0] != "Assistant":
        problems.append((field, "the transcript ends with a Human turn: the last turn must be the Assistant's answer"))
        return None
    messages: list[dict[str, str]] = []
    for speaker, content in turns:
        role = _HH_ROLES[speaker]
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages


def _hh(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    """The longest shared prefix of turns is the prompt; the final Assistant turns are the answers.

    The canonical form is TRL's conversational one, as the serving export writes: ``prompt`` a list of messages,
    ``chosen``/``rejected`` a list of one assistant message each.
    """
    problems: Problems = []
    sides = {}
    for key in ("chosen", "rejected"):
        text = _text(row, key, problems, required=True)
        if isinstance(text, str) and text.strip():
            sides[key] = _hh_messages(text, key, problems)
    chosen, rejected = sides.get("chosen"), sides.get("rejected")
    if problems or chosen is None or rejected is None:
        return None, problems
    if chosen[:-1] != rejected[:-1]:
        pairs = enumerate(zip(chosen, rejected, strict=False))
        turn = next((i for i, (a, b) in pairs if a != b), min(len(chosen), len(rejected)))
        return None, [
            (
                "rejected",
                f"does not share the conversation before the final Assistant turn with chosen (they differ at "
                f"message {turn + 1}): only the last answer may differ",
            )
        ]
    return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}, []


_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _binary(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    out = {k: _filter_messages(row.get(k), ctx) for k in ("prompt", "completion") if k in row}
    label = row.get("label")
    # CSV has no types: "true"/"false"/"1"/"0" cells are the booleans; anything else stays a string that the
    # strict record rejects with a clear "should be a valid boolean".
    if not ctx.typed and isinstance(label, str):
        label = _BOOLS.get(label.strip().lower(), label)
    if "label" in row:
        out["label"] = label
    return out, []


def _text_format(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    return {k: row[k] for k in ("text", "metadata") if k in row}, []


def _classification(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    out = {k: row[k] for k in ("text", "label") if k in row}
    # CSV has no types: a label cell that is an integer ("0", "1") becomes a class id, anything else a class name.
    label = out.get("label")
    if not ctx.typed and isinstance(label, str) and _INT.fullmatch(label.strip()):
        out["label"] = int(label)
    return out, []


def _eval(row: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Problems]:
    out = {k: row[k] for k in ("input", "reference", "context", "metadata") if k in row}
    if not ctx.typed:  # an empty CSV cell means "no reference" / "no context"
        out = {k: v for k, v in out.items() if not (k in ("reference", "context") and v == "")}
    # A class id stored as a JSON integer (label: 1) is the same reference as CSV's "1": metrics compare text.
    ref = out.get("reference")
    if isinstance(ref, int) and not isinstance(ref, bool):
        out["reference"] = str(ref)
    elif isinstance(ref, list):
        out["reference"] = [str(r) if isinstance(r, int) and not isinstance(r, bool) else r for r in ref]
    return out, []


FORMATS: dict[FormatName, FormatSpec] = {
    s.name: s
    for s in (
        FormatSpec(
            "openai",
            "chat",
            ("messages",),
            ("tools", "metadata"),
            "OpenAI chat: {messages: [{role, content}]}",
            _openai,
        ),
        FormatSpec(
            "alpaca",
            "chat",
            ("instruction", "output"),
            ("input", "system", "history"),
            "Alpaca: {instruction, input, output} (+ system, history) → user/assistant chat",
            _alpaca,
        ),
        FormatSpec(
            "sharegpt",
            "chat",
            ("conversations",),
            ("system", "tools"),
            "ShareGPT: {conversations: [{from: human|gpt|system|function_call|observation, value}]} → chat",
            _sharegpt,
        ),
        FormatSpec(
            "preference",
            "preference",
            ("prompt", "chosen", "rejected"),
            (),
            "Preference pairs: {prompt, chosen, rejected}, each a string or a list of messages",
            _preference,
        ),
        FormatSpec(
            "hh",
            "preference",
            ("chosen", "rejected"),
            (),
            "Anthropic-HH: {chosen, rejected} transcripts '\\n\\nHuman: …\\n\\nAssistant: …'; shared turns → prompt",
            _hh,
        ),
        FormatSpec(
            "binary",
            "binary",
            ("prompt", "completion", "label"),
            (),
            "Binary feedback (KTO): {prompt, completion, label: true|false}, prompt/completion a string or messages",
            _binary,
        ),
        FormatSpec(
            "text", "text", ("text",), ("metadata",), "Raw text: {text}, or .txt/.md files and folders", _text_format
        ),
        FormatSpec(
            "classification", "classification", ("text", "label"), (), "Classification: {text, label}", _classification
        ),
        FormatSpec(
            "eval",
            "eval",
            ("input",),
            ("reference", "context", "metadata"),
            "Eval items: {input, reference (string or list), context, metadata}",
            _eval,
        ),
    )
}


def detect_format(
    keys: Iterable[str], *, source: str, kind: Kind | None = None, headerless_hint: bool = False
) -> FormatName:
    """Pick the format that explains the most of ``keys`` (see the module docstring for the rules).

    ``headerless_hint`` adds advice for CSV/TSV files, whose first row may be data rather than a header.
    """
    keys = set(keys)
    specs = [s for s in FORMATS.values() if kind is None or s.kind == kind]
    candidates = [s for s in specs if set(s.required) <= keys]
    found = ", ".join(repr(k) for k in sorted(keys)) or "none"
    hint = "pass format= (CLI: --format), or map your columns with field options (CLI: --field input=question)"
    if headerless_hint:
        hint += "; if the file has no header row, name its columns with columns= (CLI: --columns text,label)"
    if not candidates:
        listed = "; ".join(s.signature() for s in specs)
        raise DataError(f"cannot tell the format of {source}: keys found: {found}. Known formats: {listed}", hint=hint)
    best = max(len(keys & s.keys) for s in candidates)
    winners = [s.name for s in candidates if len(keys & s.keys) == best]
    if len(winners) > 1:
        raise DataError(
            f"ambiguous format of {source}: keys found: {found} fit {' and '.join(winners)} equally well", hint=hint
        )
    return winners[0]


def to_canonical(
    spec: FormatSpec, row: dict[str, Any], ctx: Context
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """Convert one raw row to a canonical dict (``None`` when it has problems) and list its problems."""
    problems: Problems = []
    unknown = [k for k in row if k not in spec.keys]
    if unknown and ctx.extra == "forbid":
        expected = ", ".join(spec.required + spec.optional)
        problems += [(k, f"unknown field for the {spec.name} format (expected: {expected})") for k in unknown]
    known = {k: v for k, v in row.items() if k in spec.keys}
    if not ctx.typed:
        for k in _JSON_KEYS & known.keys():
            if isinstance(known[k], str):
                try:
                    known[k] = parse_json(known[k]) if known[k].strip() else None
                except ValueError as err:
                    msg = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
                    problems.append((k, f"expected a JSON list or object in this cell: {msg}"))
        known = {k: v for k, v in known.items() if v is not None}
    data, convert_problems = spec.convert(known, ctx)
    problems += convert_problems
    if data is not None and ctx.extra == "metadata" and unknown:
        # Eval items keep their extra columns (category, id, difficulty...) as metadata for per-slice reports.
        meta = data.get("metadata")
        data["metadata"] = {**(meta if isinstance(meta, dict) else {}), **{k: row[k] for k in unknown}}
    return (None if problems else data), problems
