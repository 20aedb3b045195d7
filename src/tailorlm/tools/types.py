"""The nouns of tool use, shared by the registry, the call parser, the executor, the agent loop and the server.

A **Tool** is an OpenAI function definition (name, description, JSON-schema parameters) plus, optionally, the
Python callable that implements it. A **ToolCall** is what a model asked for; a **ToolResult** is what running it
gave back (content for the model, or an error message the model can read).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tool:
    """One callable tool. ``fn`` is None for a tool known only by its schema (it can be rendered, called by a model
    and scored, but not executed)."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    fn: Callable[..., Any] | None = None
    timeout_s: float = 10.0

    def schema(self) -> dict[str, Any]:
        """The OpenAI tool definition: ``{"type": "function", "function": {name, description, parameters}}``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCall:
    """A model's request to run ``name`` with ``arguments`` (a dict, or the raw string when it was not JSON)."""

    name: str
    arguments: dict[str, Any] | str
    id: str = field(default_factory=new_call_id)

    def openai(self) -> dict[str, Any]:
        """The OpenAI ``tool_calls`` entry (arguments as a JSON string, as the API sends them)."""
        args = self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": args}}


@dataclass
class ToolResult:
    """What running a call gave: ``content`` for the model (or an ``error`` it can read), and how long it took."""

    call_id: str
    name: str
    content: str
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def message(self) -> dict[str, Any]:
        """The ``tool`` role message that carries the result back into the conversation."""
        return {"role": "tool", "tool_call_id": self.call_id, "name": self.name, "content": self.content}
