"""Preference records → the conversational rows TRL's preference trainers read, cut to fit the token budget.

    {"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}    (pairs)
    {"prompt": [messages], "completion": [{"role": "assistant", ...}], "label": bool}   (KTO's binary records)

TRL *drops* a pair longer than ``max_length``. Multi-turn preference data (Anthropic HH) has long early turns that
matter less than the last exchange, so ``fit_rows`` first drops the prompt's oldest exchanges (a user turn and the
answer after it) and only drops the record when even the last exchange does not fit; it counts both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tailorlm.data import Dataset, load_dataset
from tailorlm.errors import ConfigError
from tailorlm.train.align.config import PreferenceData

log = logging.getLogger("tailorlm.train.align")


def load_preferences(spec: PreferenceData, kind: str = "preference", seed: int = 0) -> Dataset:
    """Load and validate ``spec`` (``kind`` preference or binary); invalid records skipped if it says so."""
    dataset = load_dataset(spec.path, spec.format, kind=kind, strict=not spec.skip_invalid)  # type: ignore[arg-type]
    if dataset.issues:
        shown = "; ".join(str(i) for i in dataset.issues[:3])
        log.warning(
            "%s: skipped %d invalid records (%s%s)",
            spec.path,
            len(dataset.issues),
            shown,
            ", …" * (len(dataset.issues) > 3),
        )
    return dataset


def limited(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded sample of ``limit`` records (in file order), or all of them. Applied to the training side after the
    held-out split, so a smaller run keeps the same held-out pairs as a full one."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.split(eval_size=limit, seed=seed)[1]


def _messages(value: Any, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m.role, "content": m.content or ""} for m in value]


def to_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """Canonical preference or binary records → TRL conversational rows (text sides become single turns)."""
    rows = []
    for r in dataset:
        prompt = _messages(r.prompt, "user")
        if dataset.kind == "binary":
            rows.append({"prompt": prompt, "completion": _messages(r.completion, "assistant"), "label": r.label})
        else:
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": _messages(r.chosen, "assistant"),
                    "rejected": _messages(r.rejected, "assistant"),
                }
            )
    return rows


def answers(row: dict[str, Any]) -> list[list[dict[str, str]]]:
    """The answer sides of a row: chosen and rejected, or the one completion."""
    return [row["completion"]] if "completion" in row else [row["chosen"], row["rejected"]]


@dataclass
class FitStats:
    """What ``fit_rows`` did: rows kept whole, rows whose oldest turns were dropped, rows dropped, longest kept."""

    kept: int = 0
    trimmed: int = 0
    dropped: int = 0
    longest: int = 0
    lengths: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"kept": self.kept, "trimmed": self.trimmed, "dropped": self.dropped, "longest": self.longest}


def _tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def trim_oldest(prompt: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The prompt without its oldest exchange (a system message stays); None when only the last user turn is left."""
    head = [m for m in prompt[:1] if m["role"] == "system"]
    body = prompt[len(head) :]
    users = [i for i, m in enumerate(body) if m["role"] == "user"]
    if len(users) < 2:
        return None
    return head + body[users[1] :]


def fit_rows(
    rows: Iterable[dict[str, Any]], tokenizer: Any, max_length: int, what: str
) -> tuple[list[dict], FitStats]:
    """Rows whose prompt plus each answer fits ``max_length`` tokens, dropping the oldest exchanges first."""
    kept, stats = [], FitStats()
    for row in rows:
        prompt, trimmed = row["prompt"], False
        while True:
            n = max(_tokens(tokenizer, [*prompt, *side]) for side in answers(row))
            if n <= max_length:
                break
            shorter = trim_oldest(prompt)
            if shorter is None:
                prompt = None
                break
            prompt, trimmed = shorter, True
        if prompt is None:
            stats.dropped += 1
            continue
        kept.append({**row, "prompt": prompt})
        stats.kept += 1
        stats.trimmed += trimmed
        stats.longest = max(stats.longest, n)
        stats.lengths.append(n)
    if not kept:
        raise ConfigError(
            f"every {what} record is longer than training.max_length={max_length} tokens, even its last exchange",
            hint="raise training.max_length",
        )
    if stats.trimmed or stats.dropped:
        log.info(
            "%s: %d records fit, %d of them with older turns dropped; %d dropped (the last exchange is longer than "
            "%d tokens)",
            what,
            stats.kept,
            stats.trimmed,
            stats.dropped,
            max_length,
        )
    return kept, stats


def split_rows(
    dataset: Dataset, held_out: Dataset | None, eval_fraction: float, seed: int
) -> tuple[Dataset, Dataset | None]:
    """(train, held-out): the given held-out set, else a seeded ``eval_fraction`` of the data (none under 10)."""
    if held_out is not None:
        return dataset, held_out
    if eval_fraction > 0 and len(dataset) >= 10:
        return dataset.split(eval_fraction, seed=seed)
    if eval_fraction > 0:
        log.warning("only %d records: no held-out split (needs at least 10)", len(dataset))
    return dataset, None
