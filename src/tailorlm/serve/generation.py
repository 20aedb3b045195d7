"""From a validated request to generated rows: the System's prompt program and retrieval, the limits, and the
rows handed to the scheduler, whose chunks come back to the asyncio side through a queue.

Retrieval and tokenization are CPU work, so ``prepare`` runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tailorlm.models.engines.base import GenerationParams, Message, StreamChunk, encode_prompt, render_prompt
from tailorlm.models.engines.rows import Row
from tailorlm.prompting.program import render_messages, render_user_turn
from tailorlm.serve.config import Limits
from tailorlm.serve.registry import Served
from tailorlm.serve.scheduler import QueueFull
from tailorlm.serve.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest
from tailorlm.serve.state import ApiError

if TYPE_CHECKING:
    from tailorlm.tools.constrain import Constraint


@dataclass
class Prepared:
    """One prompt, ready for the scheduler."""

    served: Served
    prompt_ids: list[int]
    params: GenerationParams
    context: Any = None  # RagContext for a RAG System
    abstained: bool = False  # the RAG System answers "I don't know" without generating
    tools: list[dict[str, Any]] | None = None  # the request's tools: the answer is parsed for tool calls

    @property
    def scheduler(self) -> Any:
        return self.served.constrained_scheduler() if self.params.constraint is not None else self.served.scheduler


@dataclass
class Choice:
    """One completion as it is being produced."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    first_token_s: float | None = None
    error: BaseException | None = None
    done: bool = False
    citations: list[dict[str, Any]] | None = None


# -- settings ---------------------------------------------------------------------------------------------------
def refuse_unsupported(body: ChatCompletionRequest | CompletionRequest, served: Served) -> None:
    """OpenAI fields this System cannot honour get a 400 that says so, not a silently different answer."""
    if body.logit_bias:
        raise ApiError(400, "logit_bias is not supported", param="logit_bias")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) not in (None, 0, 0.0):
            raise ApiError(400, f"{name} is not supported (send 0 or leave it out)", param=name)
    if body.logprobs or body.top_logprobs:
        raise ApiError(400, "logprobs are not returned by this server", param="logprobs")
    if isinstance(body, CompletionRequest):
        if body.echo or body.suffix:
            raise ApiError(400, "echo and suffix are not supported", param="echo" if body.echo else "suffix")
        return
    if body.tool_choice not in (None, "none", "auto") and not body.tools:
        raise ApiError(400, "tool_choice needs tools", param="tool_choice")
    if body.tools and served.system.head is not None:
        raise ApiError(400, f"System {served.name!r} answers with labels: it cannot call tools", param="tools")
    kind = (body.response_format or {}).get("type")
    if kind not in (None, "text", "json_object", "json_schema"):
        raise ApiError(400, f"response_format {kind!r} is not supported: text, json_object or json_schema", param=
                       "response_format")  # fmt: skip


def request_constraint(body: ChatCompletionRequest) -> Constraint | None:
    """The constraint a chat request asks for: ``response_format`` (JSON object or schema), or a forced tool call
    (``tool_choice: required`` or a named function). ``auto`` tool calls are parsed, not constrained, so they keep
    the fast engine; a malformed call reaches the client as text it can see."""
    from tailorlm.tools.constrain import Constraint

    fmt = body.response_format or {}
    try:
        if fmt.get("type") == "json_object":
            return Constraint(type="json_object")
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            return Constraint(type="json_schema", schema=spec.get("schema") or spec)
        if body.tools and body.tool_choice == "required":
            return Constraint(type="tool_calls", tools=body.tools, mode="required",
                              parallel=body.parallel_tool_calls is not False)  # fmt: skip
        if body.tools and isinstance(body.tool_choice, dict):
            name = (body.tool_choice.get("function") or {}).get("name")
            chosen = [t for t in body.tools if (t.get("function") or {}).get("name") == name]
            if not chosen:
                raise ApiError(400, f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
            return Constraint(type="tool_calls", tools=chosen, mode="required", parallel=False)
    except ValueError as err:
        raise ApiError(400, f"cannot constrain the answer: {err}", param="response_format") from None
    return None


def generation_params(
    body: ChatCompletionRequest | CompletionRequest, served: Served, limits: Limits
) -> GenerationParams:
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(
            400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}", param="max_tokens"
        )
    if body.n > limits.n:
        raise ApiError(400, f"n is {body.n}; this server allows at most {limits.n}", param="n")
    defaults = served.system.generation
    update: dict[str, Any] = {"logprobs": False}
    if max_tokens is not None:
        update["max_new_tokens"] = max_tokens
    else:
        update["max_new_tokens"] = min(defaults.max_new_tokens, limits.max_tokens)
    if body.temperature is not None:
        update["temperature"] = body.temperature
    if body.top_p is not None:
        update["top_p"] = body.top_p
    if body.seed is not None:
        update["seed"] = body.seed
    if body.stop is not None:
        update["stop"] = body.stop
    return defaults.model_copy(update=update)


# -- prompts ----------------------------------------------------------------------------------------------------
def client_messages(messages: Sequence[ChatMessage], *, tools: bool = False) -> list[Message]:
    """The conversation as plain role/content dicts; ``developer`` is OpenAI's newer name for ``system``. With
    ``tools``, assistant ``tool_calls`` and ``tool`` results are kept, and the last turn may be a tool result."""
    out: list[Message] = []
    for i, m in enumerate(messages):
        if (m.role == "tool" or m.tool_calls) and not tools:
            raise ApiError(400, "tool messages need the request's tools", param=f"messages[{i}]")
        try:
            text = m.text()
        except ValueError as err:
            raise ApiError(400, str(err), param=f"messages[{i}].content") from None
        message: Message = {"role": "system" if m.role == "developer" else m.role, "content": text}
        if m.tool_calls:
            message["tool_calls"] = m.tool_calls
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    if out[-1]["role"] not in (("user", "tool") if tools else ("user",)):
        raise ApiError(400, "the last message must be from the user (or a tool result)", param="messages")
    return out


def apply_program(served: Served, messages: list[Message], question: str) -> list[Message]:
    """The System's prompt program around the conversation: its system message (unless the client sent one), its
    few-shot turns and template on a one-turn conversation, the template on the last turn otherwise."""
    prompt = served.system.prompt
    if prompt is None:
        return [*messages[:-1], {"role": "user", "content": question}]
    if len(messages) == 1:
        return render_messages(prompt, question)
    out = [*messages[:-1], {"role": "user", "content": render_user_turn(prompt.template, question)}]
    if prompt.system and out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": prompt.system})
    return out


def prepare_chat(
    served: Served,
    messages: list[Message],
    params: GenerationParams,
    limits: Limits,
    tools: list[dict[str, Any]] | None = None,
) -> Prepared:
    """Runs in a worker thread: retrieval (RAG Systems), the prompt program, the tools, tokenization and the prompt
    limit. After a tool result (the last turn is ``tool``) there is no new question: no retrieval, no template."""
    context = None
    if messages[-1]["role"] == "tool":
        system = served.system.prompt.system if served.system.prompt else None
        convo = (
            messages
            if (messages[0]["role"] == "system" or not system)
            else [{"role": "system", "content": system}, *messages]
        )
    else:
        question = messages[-1]["content"]
        if served.rag is not None:
            with served.rag_lock:
                context = served.rag.prepare([question])[0]
            if context.abstain:
                return Prepared(served, [], params, context=context, abstained=True)
            question = context.input
        convo = apply_program(served, messages, question)
    if tools:
        from tailorlm.tools.calling import render_tool_prompt

        text = render_tool_prompt(served.tokenizer, convo, tools)
    else:
        text = render_prompt(served.tokenizer, convo)
    return Prepared(served, _checked_ids(served, text, limits), params, context=context, tools=tools or None)


def prepare_text(served: Served, prompt: str, params: GenerationParams, limits: Limits) -> Prepared:
    return Prepared(served, _checked_ids(served, prompt, limits), params)


def _checked_ids(served: Served, text: str, limits: Limits) -> list[int]:
    ids = encode_prompt(served.tokenizer, text)
    if len(ids) > limits.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt is {len(ids)} tokens; this server allows at most {limits.max_prompt_tokens}",
            param="messages",
            code="context_length_exceeded",
        )
    if not ids:
        raise ApiError(400, "the prompt is empty", param="prompt")
    return ids


# -- running ----------------------------------------------------------------------------------------------------
@dataclass
class Generation:
    """The rows of one request in flight; ``events()`` yields ``(choice, delta)`` as text arrives."""

    choices: list[Choice]
    rows: list[Row | None]
    queue: asyncio.Queue[tuple[int, StreamChunk | None]]
    started: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        for row in self.rows:
            if row is not None:
                row.cancelled.set()

    @property
    def finished(self) -> bool:
        return all(c.done for c in self.choices)

    async def events(self, deadline: float) -> AsyncIterator[tuple[Choice, str]]:
        while not self.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                self.cancel()
                raise ApiError(
                    504, "the answer took longer than this server's timeout", type="timeout", code="timeout"
                )
            try:
                index, chunk = await asyncio.wait_for(self.queue.get(), min(left, 1.0))
            except TimeoutError:
                yield self.choices[0], ""  # a heartbeat: the caller checks whether the client is still there
                continue
            choice = self.choices[index]
            if chunk is None:
                row = self.rows[index]
                choice.error = (row.error if row else None) or RuntimeError("generation failed")
                choice.done = True
                continue
            if chunk.text and choice.first_token_s is None:
                choice.first_token_s = time.perf_counter() - self.started
            choice.text += chunk.text
            if chunk.finish_reason is not None:
                choice.finish_reason = chunk.finish_reason
                choice.completion_tokens = chunk.usage.completion_tokens if chunk.usage else 0
                choice.done = True
            yield choice, chunk.text


def start(prepared: Sequence[Prepared], n: int, abstain_text: str | None = None) -> Generation:
    """Submit ``n`` rows per prepared prompt; abstaining RAG answers finish at once without a row."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, StreamChunk | None]] = asyncio.Queue()
    choices: list[Choice] = []
    rows: list[Row | None] = []
    pending: dict[int, list[Row]] = {}
    for p in prepared:
        for _ in range(n):
            index = len(choices)
            choices.append(Choice(index))
            if p.abstained:
                rows.append(None)
                message = p.served.system.retriever.abstain_message if p.served.system.retriever else ""
                queue.put_nowait((index, StreamChunk(text=message, finish_reason="stop")))
                continue

            def sink(chunk: StreamChunk | None, index: int = index) -> None:
                # A closed event loop means the server stopped: nobody waits for this row any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, (index, chunk))

            row = Row(list(p.prompt_ids), p.params, sink, adapter=p.served.adapter)
            rows.append(row)
            pending.setdefault(id(p.scheduler), []).append(row)
    by_scheduler = {id(p.scheduler): p.scheduler for p in prepared}
    try:
        for key, group in pending.items():
            by_scheduler[key].submit(group)
    except QueueFull as full:
        for row in rows:
            if row is not None:
                row.cancelled.set()
        raise ApiError(
            429,
            "the server is at capacity: retry shortly",
            type="rate_limit_error",
            code="server_busy",
            headers={"Retry-After": str(round(full.retry_after_s))},
        ) from None
    return Generation(choices, rows, queue)
