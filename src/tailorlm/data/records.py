"""Canonical record types: what every loader produces, whatever the file format was.

Six kinds cover the toolkit: ``chat`` (SFT), ``preference`` (reward models, DPO), ``binary`` (KTO: one answer
labelled good or bad, e.g. a served answer's thumbs), ``text`` (continued pretraining, RAG documents),
``classification`` (heads) and ``eval`` (an input and its reference answers).
The models are strict (no silent ``1 → "1"`` coercion) and forbid unknown fields, so a typo in a key is an
error instead of a silently dropped column.

Pydantic checks shape and types. ``record_problems`` adds the checks that need context (an empty message,
a chat without an assistant turn), so that one function reports every problem of a record at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from tailorlm.data.issues import pydantic_problems

Kind = Literal["chat", "preference", "binary", "text", "classification", "eval"]
KINDS: tuple[Kind, ...] = ("chat", "preference", "binary", "text", "classification", "eval")
Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")

_STRICT = ConfigDict(extra="forbid", strict=True)


def _str_or_list(value: Any) -> str | None:
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else None


def _str_or_int(value: Any) -> str | None:
    if isinstance(value, str):
        return "str"
    # bool is an int subclass in Python; a label of ``true`` is almost surely a mistake, so refuse it.
    return "int" if isinstance(value, int) and not isinstance(value, bool) else None


def _reference_tag(value: Any) -> str | None:
    return "none" if value is None else _str_or_list(value)


class Message(BaseModel):
    """One chat turn. ``content`` may be null only for an assistant turn that carries ``tool_calls``."""

    model_config = _STRICT

    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


MESSAGE_KEYS = frozenset(Message.model_fields)

# Discriminated unions give one clear error ("a string or a list of messages") instead of one per member.
TextOrMessages = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[Message], Tag("list")],
    Discriminator(
        _str_or_list, custom_error_type="invalid_union", custom_error_message="Input should be a string or a list"
    ),
]
Label = Annotated[
    Annotated[str, Tag("str")] | Annotated[int, Tag("int")],
    Discriminator(
        _str_or_int, custom_error_type="invalid_union", custom_error_message="Input should be a string or an integer"
    ),
]
Reference = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[str], Tag("list")] | Annotated[None, Tag("none")],
    Discriminator(
        _reference_tag,
        custom_error_type="invalid_union",
        custom_error_message="Input should be a string, a list of strings or null",
    ),
]


class ChatRecord(BaseModel):
    """A conversation in OpenAI message form, with optional tool (function) schemas."""

    model_config = _STRICT

    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    # Provenance, e.g. ``{"augmented": {"method", "source_id"}}`` on records made by ``tailorlm.data.augment``.
    metadata: dict[str, Any] | None = None


class PreferenceRecord(BaseModel):
    """A prompt with a preferred and a dispreferred answer, each plain text or a list of messages."""

    model_config = _STRICT

    prompt: TextOrMessages
    chosen: TextOrMessages
    rejected: TextOrMessages


class BinaryFeedbackRecord(BaseModel):
    """A prompt and one answer labelled desirable (``true``) or not: TRL's unpaired-preference (KTO) format.

    Served feedback is mostly of this shape (a thumbs up or down on one answer); unlike a preference pair it
    needs no second answer to the same prompt.
    """

    model_config = _STRICT

    prompt: TextOrMessages
    completion: TextOrMessages
    label: bool


class TextRecord(BaseModel):
    """Raw text, e.g. one document for continued pretraining or retrieval."""

    model_config = _STRICT

    text: str
    metadata: dict[str, Any] | None = None  # provenance, as for chat records


class ClassificationRecord(BaseModel):
    """A text and its label (a class name or a class id)."""

    model_config = _STRICT

    text: str
    label: Label


class EvalRecord(BaseModel):
    """An eval item: the input, the reference answer(s) if any, optional context and free-form metadata."""

    model_config = _STRICT

    input: str
    reference: Reference = None
    context: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


Record = ChatRecord | PreferenceRecord | BinaryFeedbackRecord | TextRecord | ClassificationRecord | EvalRecord

RECORD_TYPES: dict[Kind, type[BaseModel]] = {
    "chat": ChatRecord,
    "preference": PreferenceRecord,
    "binary": BinaryFeedbackRecord,
    "text": TextRecord,
    "classification": ClassificationRecord,
    "eval": EvalRecord,
}


def _message_problems(messages: list[Any], prefix: str) -> list[tuple[str, str]]:
    problems = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue  # a type error, which pydantic reports
        content = m.get("content")
        if content is None:
            if not (m.get("role") == "assistant" and m.get("tool_calls")):
                problems.append(
                    (f"{prefix}[{i}].content", "missing content (only an assistant tool call may omit it)")
                )
        elif isinstance(content, str) and not content.strip() and not m.get("tool_calls"):
            problems.append((f"{prefix}[{i}].content", "empty content"))
    return problems


def _nonempty(value: Any, name: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [] if value.strip() else [(name, "empty text")]
    if isinstance(value, list):
        return _message_problems(value, name) if value else [(name, "empty list of messages")]
    return []


def _answer_key(value: Any) -> tuple[tuple[Any, ...], ...] | None:
    """An answer as ``((role, text, tool calls), ...)`` with runs of whitespace collapsed; ``None`` if malformed.

    A plain-text answer counts as one assistant message, so ``"Paris."`` and ``[{"role": "assistant", "content":
    "Paris. "}]`` are the same answer.
    """
    if isinstance(value, str):
        return (("assistant", " ".join(value.split()), None),)
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        return None
    return tuple(
        (m.get("role"), " ".join(c.split()) if isinstance(c := m.get("content"), str) else c, m.get("tool_calls"))
        for m in value
    )


def _identical_sides(data: dict[str, Any]) -> list[tuple[str, str]]:
    chosen = _answer_key(data.get("chosen"))
    if chosen is not None and chosen == _answer_key(data.get("rejected")):
        # A pair with no difference has a zero DPO/Bradley–Terry gradient at best, and teaches noise at worst.
        return [("rejected", "identical to chosen (ignoring whitespace): the pair prefers nothing")]
    return []


# The text fields of each non-chat kind that must not be empty (chat has its own message checks).
_NONEMPTY_FIELDS = {
    "preference": ("prompt", "chosen", "rejected"),
    "binary": ("prompt", "completion"),
    "eval": ("input",),
}


def record_problems(kind: Kind, data: dict[str, Any], *, require_assistant: bool = True) -> list[tuple[str, str]]:
    """Problems pydantic cannot see: empty texts, empty messages, a chat without an assistant answer, a
    preference pair whose two answers are the same.

    Works on the raw dict and tolerates wrong types (pydantic reports those), so that one bad record lists
    all its problems at once: a wrong role *and* an empty message. ``require_assistant`` is on for training
    data: a chat with no assistant turn teaches the model nothing.
    """
    if kind == "chat":
        messages = data.get("messages")
        if not isinstance(messages, list):
            return []
        if not messages:
            return [("messages", "empty conversation")]
        problems = _message_problems(messages, "messages")
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        # With a misspelt role ("bot"), "no assistant turn" would only repeat the role error: skip it then.
        if require_assistant and all(r in ROLES for r in roles) and "assistant" not in roles:
            problems.append(("messages", "no assistant turn (training data needs at least one answer to learn)"))
        return problems
    names = _NONEMPTY_FIELDS.get(kind, ("text",))
    problems = [p for name in names for p in _nonempty(data.get(name), name)]
    if kind == "preference" and not any(f.startswith(("chosen", "rejected")) for f, _ in problems):
        problems += _identical_sides(data)  # two empty sides are identical too, but "empty" says it better
    return problems


def validate_record(
    kind: Kind, data: dict[str, Any], *, require_assistant: bool = True
) -> tuple[BaseModel | None, list[tuple[str, str]]]:
    """Validate one canonical dict. Returns the record (``None`` if invalid) and every problem found."""
    problems = []
    record = None
    try:
        record = RECORD_TYPES[kind].model_validate(data)
    except ValidationError as err:
        problems = pydantic_problems(err)
    reported = {field for field, _ in problems}
    problems += [p for p in record_problems(kind, data, require_assistant=require_assistant) if p[0] not in reported]
    return (None if problems else record), problems


def record_to_dict(record: BaseModel) -> dict[str, Any]:
    """The canonical JSON form: unset optional fields (``None``) are left out, so equivalent sources match."""
    return record.model_dump(mode="json", exclude_none=True)
