"""Token-length statistics: how long the records are for the model that will see them.

Chats are rendered with the tokenizer's own chat template, exactly as a trainer renders them, so the numbers
include the role markers and special tokens that count against the context window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from tailorlm.data.records import (
    BinaryFeedbackRecord,
    ChatRecord,
    ClassificationRecord,
    EvalRecord,
    Message,
    PreferenceRecord,
    TextRecord,
)

_BATCH = 256  # tokenizers are much faster on batches, and 256 keeps memory flat on big files


def percentile(sorted_values: Sequence[int], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of an ascending, non-empty sequence; ``q`` in [0, 100]."""
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _ids_length(encoded: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); older versions a list.
    ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
    return [len(x) for x in ids]


def _messages(value: str | list[Message], role: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [m.model_dump(exclude_none=True) for m in value]


def _chat_lengths(tokenizer: Any, conversations: list[list[dict[str, Any]]], tools: list[Any]) -> list[int]:
    if any(tools):  # templates differ on ``tools=None`` vs absent, so pass them one conversation at a time
        return [
            _ids_length(tokenizer.apply_chat_template([c], tools=t, tokenize=True))[0]
            for c, t in zip(conversations, tools, strict=True)
        ]
    return _ids_length(tokenizer.apply_chat_template(conversations, tokenize=True))


def _text_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    return _ids_length(tokenizer(texts, add_special_tokens=True))


def _preference_lengths(tokenizer: Any, records: list[PreferenceRecord | BinaryFeedbackRecord]) -> list[int]:
    """The longer of prompt+chosen and prompt+rejected: the longest sequence a trainer will build.

    A binary (KTO) record has one answer, its completion: its length is prompt+completion.
    """
    lengths = []
    for r in records:
        answers = (r.completion,) if isinstance(r, BinaryFeedbackRecord) else (r.chosen, r.rejected)
        if isinstance(r.prompt, list):
            pair = [_messages(r.prompt, "user") + _messages(answer, "assistant") for answer in answers]
            lengths.append(max(_chat_lengths(tokenizer, pair, [None] * len(pair))))
        else:
            texts = [r.prompt + (a if isinstance(a, str) else "".join(m.content or "" for m in a)) for a in answers]
            lengths.append(max(_text_lengths(tokenizer, texts)))
    return lengths


def record_lengths(records: Sequence[BaseModel], tokenizer: Any) -> list[int]:
    """Token count of each record.

    chat: the rendered conversation (with tools); preference and binary: see ``_preference_lengths``; text and
    classification: ``text``; eval: ``context`` + blank line + ``input`` (what the model reads, not the
    reference answer).
    """
    lengths: list[int] = []
    for start in range(0, len(records), _BATCH):
        batch = records[start : start + _BATCH]
        if all(isinstance(r, ChatRecord) for r in batch):
            chats = [_messages(r.messages, "user") for r in batch]  # type: ignore[attr-defined]
            lengths += _chat_lengths(tokenizer, chats, [r.tools for r in batch])  # type: ignore[attr-defined]
        elif all(isinstance(r, PreferenceRecord | BinaryFeedbackRecord) for r in batch):
            lengths += _preference_lengths(tokenizer, list(batch))  # type: ignore[arg-type]
        else:
            lengths += _text_lengths(tokenizer, [_plain_text(r) for r in batch])
    return lengths


def _plain_text(record: BaseModel) -> str:
    if isinstance(record, TextRecord | ClassificationRecord):
        return record.text
    if isinstance(record, EvalRecord):
        return f"{record.context}\n\n{record.input}" if record.context else record.input
    raise TypeError(f"mixed record types in one batch: {type(record).__name__}")


def summarize(lengths: Iterable[int]) -> dict[str, Any]:
    """``count, min, mean, p50, p95, max`` of a list of lengths (``None`` values for an empty list)."""
    values = sorted(lengths)
    if not values:
        return {"count": 0, "min": None, "mean": None, "p50": None, "p95": None, "max": None}
    return {
        "count": len(values),
        "min": values[0],
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": values[-1],
    }


def token_stats(dataset: Any, tokenizer: Any) -> dict[str, Any]:
    """Token-length statistics of a ``Dataset`` (or any sequence of records) under ``tokenizer``.

    Returns ``{"count", "min", "mean", "p50", "p95", "max"}``; percentiles interpolate linearly.
    """
    records = list(getattr(dataset, "records", dataset))
    return summarize(record_lengths(records, tokenizer))


def describe(dataset: Any, tokenizer: Any | None = None) -> dict[str, Any]:
    """What ``tailor data validate`` reports: the dataset's summary, plus token statistics given a tokenizer."""
    report = dict(dataset.summary())
    if tokenizer is not None:
        report["tokens"] = token_stats(dataset, tokenizer)
    return report
