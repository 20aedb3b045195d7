"""A constitution: the written principles that constitutional AI critiques and revises answers against.

Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback", §3: a model answers a (red-team) prompt, is
asked to critique its answer against one principle drawn at random, then to revise the answer in the light of the
critique; the revisions become fine-tuning data. The file is YAML:

    principles:
      - name: honesty
        critique_request: List the claims in the answer that are false or made up.
        revision_request: Rewrite the answer so it states only what is true.
    examples:            # optional few-shot demonstrations; left out = the default constitution's
      - {prompt: ..., answer: ..., critique_request: ..., critique: ..., revision_request: ..., revision: ...}

This module reads and validates that file, draws principles reproducibly, builds the critique and revision
requests (as chat messages, with the few-shot turns the paper found small models need), and cleans what the critic
and reviser write back. The pipeline that runs them is ``cai.py``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from tailorlm.core.config import StrictModel, load_config, parse_yaml
from tailorlm.errors import ConfigError
from tailorlm.models.engines.base import Message

DEFAULT_CONSTITUTION = Path(__file__).with_name("constitution.yaml")

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

# Said to the critic and the reviser before the examples: small chat models otherwise answer the user again instead
# of reviewing the assistant's answer.
CRITIC_SYSTEM = (
    "You review answers written by an AI assistant against a written principle. Reply with exactly the text the "
    "request asks for, and nothing else."
)


class Principle(StrictModel):
    """One principle: how to ask for a critique under it, and how to ask for the revision that fixes it."""

    name: Text = Field(description="Short identifier, reported in steps.jsonl and the summary.")
    critique_request: Text = Field(description="Asks the critic for the answer's problems under this principle.")
    revision_request: Text = Field(description="Asks the reviser to rewrite the answer so the problems go away.")


class CritiqueExample(StrictModel):
    """A worked critique and revision, shown to the critic and reviser before the real request (few-shot)."""

    prompt: Text
    answer: Text
    critique_request: Text
    critique: Text
    revision_request: Text
    revision: Text


class Constitution(StrictModel):
    """The principles, and the few-shot examples put before every critique and revision request."""

    principles: list[Principle] = Field(min_length=1, description="Drawn one per prompt and round.")
    examples: list[CritiqueExample] | None = Field(
        None, description="Few-shot demonstrations; None (key left out) = the default constitution's, [] = none."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Constitution:
        names = [p.name for p in self.principles]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"principle names must be unique; repeated: {', '.join(dupes)}")
        return self


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Read and validate a constitution file (``None``: the packaged default); examples default to the package's.

    Errors are ``ConfigError``s naming the file and the field, e.g. ``principles[2].critique_request``.
    """
    source = Path(path) if path is not None else DEFAULT_CONSTITUTION
    if source.is_file():
        # load_config would say "expected a mapping"; a bare list is the likeliest mistake, so say how to fix it.
        top = parse_yaml(source.read_text(encoding="utf-8", errors="replace"), source=str(source))
        if isinstance(top, list):
            raise ConfigError(
                f"{source}: the principles must sit under a `principles:` key, not at the top level",
                hint="indent the list under `principles:` (see docs/constitutional-ai.md)",
            )
    constitution = load_config(Constitution, source)
    if constitution.examples is None:
        default = constitution if path is None else load_constitution(None)
        constitution = constitution.model_copy(update={"examples": default.examples or []})
    return constitution


def sample_principle(principles: list[Principle], *, seed: int, key: str, round: int = 1) -> Principle:
    """The principle for one prompt (``key``) in one round: the same on every run, resume and machine.

    A string seed goes through sha512 in ``random.Random``, so it does not depend on PYTHONHASHSEED or on which
    other prompts are in the batch; a resumed run therefore draws exactly what the killed one would have.
    """
    return random.Random(f"{seed}:{key}:{round}").choice(principles)


# --- requests -----------------------------------------------------------------------------------------------


def _conversation(prompt: str, answer: str) -> str:
    return f"User: {prompt.strip()}\nAssistant: {answer.strip()}"


def _critique_turn(prompt: str, answer: str, critique_request: str) -> str:
    return f"{_conversation(prompt, answer)}\n\nCritique request: {critique_request}"


def _revision_turn(prompt: str, answer: str, critique_request: str, critique: str, revision_request: str) -> str:
    return (
        f"{_critique_turn(prompt, answer, critique_request)}\nCritique: {critique.strip()}\n\n"
        f"Revision request: {revision_request}\nWrite only the revised answer to the user."
    )


def critique_messages(
    prompt: str, answer: str, principle: Principle, examples: list[CritiqueExample] | None = None
) -> list[Message]:
    """The chat that asks the critic for a critique of ``answer`` under ``principle`` (examples first)."""
    messages: list[Message] = [{"role": "system", "content": CRITIC_SYSTEM}]
    for ex in examples or []:
        messages.append({"role": "user", "content": _critique_turn(ex.prompt, ex.answer, ex.critique_request)})
        messages.append({"role": "assistant", "content": ex.critique})
    messages.append({"role": "user", "content": _critique_turn(prompt, answer, principle.critique_request)})
    return messages


def revision_messages(
    prompt: str, answer: str, principle: Principle, critique: str, examples: list[CritiqueExample] | None = None
) -> list[Message]:
    """The chat that asks the reviser to rewrite ``answer`` given the critique (examples first)."""
    messages: list[Message] = [{"role": "system", "content": CRITIC_SYSTEM}]
    for ex in examples or []:
        turn = _revision_turn(ex.prompt, ex.answer, ex.critique_request, ex.critique, ex.revision_request)
        messages.append({"role": "user", "content": turn})
        messages.append({"role": "assistant", "content": ex.revision})
    turn = _revision_turn(prompt, answer, principle.critique_request, critique, principle.revision_request)
    messages.append({"role": "user", "content": turn})
    return messages


# --- cleaning what comes back ---------------------------------------------------------------------------------

_MARK = r"(?:\*\*|__)?"  # markdown bold around a label: **Revision:**
_REVISION_LABEL = re.compile(
    rf"^\s*{_MARK}(?:(?:sure|okay|ok|certainly|of course)[,!.]?\s+)?(?:here(?:'s| is)\s+(?:the|a|an|my)\s+)?"
    rf"(?:(?:revised|rewritten|improved|updated|new|final)\s+)?"
    rf"(?:revision|response|answer|version|rewrite|assistant)(?:\s+\d+)?\s*{_MARK}\s*:\s*{_MARK}\s*",
    re.IGNORECASE,
)
_CRITIQUE_LABEL = re.compile(
    rf"^\s*{_MARK}(?:(?:here(?:'s| is)\s+(?:the|a|my)\s+)?critique|assistant)\s*{_MARK}\s*:\s*{_MARK}\s*",
    re.IGNORECASE,
)
# A line that starts the next part of the exchange: the model went on writing the transcript, which is not the answer.
_NEXT_PART = re.compile(
    r"^\s*(?:\*\*|__)?(?:critique request|critique|revision request|revision|user|human|assistant|conversation)"
    r"\s*(?:\*\*|__)?\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTES = {'"': '"', "“": "”", "'": "'"}


def _clean(text: str, label: re.Pattern[str]) -> str:
    text = text.strip()
    while (m := label.match(text)) and m.end() > 0:
        text = text[m.end() :].lstrip()
    if m := _NEXT_PART.search(text, 1):
        text = text[: m.start()]
    text = text.strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        text = text[1:-1].strip()  # the whole revision quoted, as models like to do
    return text


def clean_revision(text: str) -> str:
    """The revised answer alone: no "Revision:"/"Here is the revised response:" lead-in, no transcript after it."""
    return _clean(text, _REVISION_LABEL)


def clean_critique(text: str) -> str:
    """The critique alone: no "Critique:" lead-in, and nothing after the model starts the next part."""
    return _clean(text, _CRITIQUE_LABEL)
