"""The Engine contract: every backend (hf, openai, later vllm and llama.cpp) turns requests into completions.

A request is either a chat (list of messages, rendered with the model's own chat template) or a raw prompt.
Generation is greedy by default, because evaluation must be deterministic; sampling is opt-in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from tailorlm.tools.constrain import Constraint

Message = dict[str, Any]  # {"role": "user", "content": "..."}, OpenAI style


class GenerationParams(BaseModel):
    """Decoding settings shared by all engines. Defaults are greedy and short, as evaluation wants."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(256, ge=1, description="Upper bound on generated tokens per request.")
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (only when temperature > 0).")
    stop: list[str] = Field(default_factory=list, description="Generation ends before the first stop string.")
    seed: int | None = Field(None, description="Seed for sampling; ignored when greedy.")
    logprobs: bool = Field(False, description="Return the log-probability of each generated token.")
    constraint: Constraint | None = Field(
        None,
        description="Constrained decoding (tools/constrain.py): JSON schema, regex, choice, tool calls. hf only.",
    )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @model_serializer(mode="wrap")
    def _omit_no_constraint(self, handler: Any) -> Any:
        # Decoding settings go into prediction-cache and ladder keys: a field added later must not change the keys
        # of every cache written before it, so an unset constraint is left out of the dump.
        data = handler(self)
        if isinstance(data, dict) and data.get("constraint") is None:
            data.pop("constraint", None)
        return data


class Request(BaseModel):
    """One generation request: chat ``messages`` or a raw ``prompt`` (exactly one of them)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] | None = None
    prompt: str | None = None
    # This request's own constraint (e.g. its tools, or its response_format), over GenerationParams.constraint: a
    # batch can hold requests with different grammars, and unconstrained ones.
    constraint: Constraint | None = None
    # OpenAI tool definitions the model may call: rendered with the messages (tools/calling.py).
    tools: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, item: str | Sequence[Message] | Request) -> Request:
        """Coerce a bare string (a user turn) or a message list into a Request."""
        if isinstance(item, Request):
            return item
        if isinstance(item, str):
            return cls(messages=[{"role": "user", "content": item}])
        return cls(messages=list(item))


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


FinishReason = Literal["stop", "length"]


class Completion(BaseModel):
    text: str
    finish_reason: FinishReason
    usage: Usage
    logprobs: list[float] | None = None
    latency_s: float = 0.0
    # Head engines (classification Systems) answer with a label; this is the calibrated probability of each label.
    probabilities: dict[str, float] | None = None


class StreamChunk(BaseModel):
    """A piece of streamed text; the last chunk carries ``finish_reason`` and ``usage``."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@runtime_checkable
class Engine(Protocol):
    """What every backend provides. ``name`` identifies the served model (e.g. for `/v1/models`)."""

    name: str

    def generate(
        self,
        requests: Sequence[str | Sequence[Message] | Request],
        params: GenerationParams | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        """Answer every request, batched as the backend sees fit, in input order.

        ``on_progress(n)`` is called as ``n`` more requests finish, for progress bars.
        """
        ...

    def stream(
        self, request: str | Sequence[Message] | Request, params: GenerationParams | None = None
    ) -> Iterator[StreamChunk]:
        """Yield the answer to one request piece by piece."""
        ...


def request_constraint(request: str | Sequence[Message] | Request, params: GenerationParams) -> Constraint | None:
    """The constraint one request generates under: its own, else the call's (``params.constraint``), else None."""
    own = request.constraint if isinstance(request, Request) else None
    return own or params.constraint


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string. Returns ``(text, stopped)``."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def render_prompt(tokenizer: Any, request: str | Sequence[Message] | Request) -> str:
    """The exact text a local model sees: a raw prompt, or chat messages rendered with the model's chat template."""
    req = Request.of(request)
    if req.prompt is not None:
        return req.prompt
    if req.tools:
        from tailorlm.tools.calling import render_tool_prompt

        return render_tool_prompt(tokenizer, req.messages or [], req.tools)
    return tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt. The chat template already holds the special tokens: adding BOS again would
    shift the prompt away from what the model was trained on."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokens_through_eos(ids: Sequence[int], eos: set[int]) -> int:
    """How many of ``ids`` count as generated: through the first end token, or all of them."""
    return next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))
