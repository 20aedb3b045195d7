"""OpenAI request bodies, validated strictly: an unknown field is a 400 that names it, never silently ignored.

Fields OpenAI defines but a System cannot honour (``logit_bias``, penalties, ``tools`` on a System without tools,
a JSON ``response_format``) are accepted by the schema and refused by the app with a 400 that says why, so a client
learns what this server does instead of getting answers that quietly ignore its settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_STRICT = ConfigDict(extra="forbid")


class ChatMessage(BaseModel):
    model_config = _STRICT

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text; content parts other than text are refused (this server is text-only)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"content part of type {part.get('type')!r} is not supported: send text parts")
            texts.append(part["text"])
        return "".join(texts)


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class _Sampling(BaseModel):
    """The decoding fields both endpoints share."""

    model_config = _STRICT

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    # Accepted so that standard clients validate, refused by the app unless they are at their neutral value.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None
    top_logprobs: int | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be empty")
        return v


class EmbeddingRequest(BaseModel):
    model_config = _STRICT

    model: str
    input: str | list[str] = Field(description="A text or a list of texts (token arrays are not supported).")
    # The openai client asks for base64 (little-endian float32) by default: it is 4x smaller on the wire.
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: about one response id; a thumb, a 1–5 score, a comment, an edit, or a pairwise choice."""

    model_config = _STRICT

    response_id: str = Field(min_length=1, max_length=128)
    rating: Literal["up", "down"] | None = None
    score: int | None = Field(None, ge=1, le=5)
    comment: str | None = Field(None, max_length=10_000)
    edited: str | None = Field(None, max_length=100_000)
    compare_to: str | None = Field(None, max_length=128)
    choice: Literal["this", "other", "tie"] | None = None
    user: str | None = Field(None, max_length=256)
