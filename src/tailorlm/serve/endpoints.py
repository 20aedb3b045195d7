"""The route bodies: chat and text completions (streamed or not), embeddings, models and feedback.

A response is written to the feedback store before the client gets its last byte, so feedback posted right after
an answer always finds it. Shadow Systems answer the same request in the background; their answers are stored
(``shadow=True``) and never sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tailorlm.serve import generation as gen
from tailorlm.serve.auth import KeyInfo
from tailorlm.serve.guard import log_fields
from tailorlm.serve.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, FeedbackRequest
from tailorlm.serve.state import ApiError, Caller, Route, ServerState
from tailorlm.serve.store import FeedbackRecord, ResponseRecord, UnknownResponseError

log = logging.getLogger("tailorlm.serve")
_BACKGROUND: set[asyncio.Task[None]] = set()


def list_models(state: ServerState) -> dict[str, Any]:
    data = [
        {
            "id": name,
            "object": "model",
            "created": int(state.started),
            "owned_by": "tailorlm",
            "engine": s.engine_name,
            "rag": s.system.retriever is not None,
        }
        for name, s in state.served.items()
    ]
    data += [
        {"id": name, "object": "model", "created": int(state.started), "owned_by": "tailorlm", "experiment": True}
        for name in state.experiments
    ]
    return {"object": "list", "data": data}


# -- completions --------------------------------------------------------------------------------------------------
async def chat_completion(
    state: ServerState, body: ChatCompletionRequest, request: Request, key: KeyInfo | None, client: str
) -> Response:
    caller = state.caller(key, client, body.user)
    state.check_rate(caller)
    route = state.route(body.model, caller)
    tools = body.tools if body.tools and body.tool_choice != "none" else None
    messages = gen.client_messages(body.messages, tools=bool(body.tools))
    limits = state.config.limits

    constraint = gen.request_constraint(body)

    async def prepare(served: Any) -> list[gen.Prepared]:
        gen.refuse_unsupported(body, served)
        params = gen.generation_params(body, served, limits)
        if constraint is not None:
            params = params.model_copy(update={"constraint": constraint})
        return [await run_in_threadpool(gen.prepare_chat, served, messages, params, limits, tools)]

    stored = {"messages": messages}
    return await _complete(state, body, request, caller, route, prepare, stored, chat=True)


async def text_completion(
    state: ServerState, body: CompletionRequest, request: Request, key: KeyInfo | None, client: str
) -> Response:
    caller = state.caller(key, client, body.user)
    state.check_rate(caller)
    route = state.route(body.model, caller)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    limits = state.config.limits
    if len(prompts) * body.n > limits.n * 4:
        raise ApiError(400, f"{len(prompts)} prompts × n={body.n} is more than this server takes at once", param="n")

    async def prepare(served: Any) -> list[gen.Prepared]:
        gen.refuse_unsupported(body, served)
        params = gen.generation_params(body, served, limits)
        return [await run_in_threadpool(gen.prepare_text, served, p, params, limits) for p in prompts]

    stored = {"prompt": prompts[0] if len(prompts) == 1 else prompts}
    return await _complete(state, body, request, caller, route, prepare, stored, chat=False)


async def _complete(
    state: ServerState,
    body: ChatCompletionRequest | CompletionRequest,
    request: Request,
    caller: Caller,
    route: Route,
    prepare: Any,
    stored: dict[str, Any],
    *,
    chat: bool,
) -> Response:
    prepared = await prepare(route.served)
    generation = gen.start(prepared, body.n)
    for shadow in route.shadows:
        task = asyncio.get_running_loop().create_task(_shadow(state, shadow, prepare, body.n, stored, route, caller))
        _BACKGROUND.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_BACKGROUND.discard)
    response_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    log_fields(request.scope).update(
        model=route.model, system=route.served.name, arm=route.arm, response_id=response_id
    )
    meta = _Meta(state, body, route, caller, prepared, stored, response_id, chat)
    meta.log = log_fields(request.scope)
    deadline = time.monotonic() + state.config.limits.timeout_s
    if body.stream:
        return StreamingResponse(
            _stream(meta, generation, request, deadline),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    checked = time.monotonic()
    try:
        async for _ in generation.events(deadline):
            # A plain request has no stream to break: ask twice a second whether its client is still there.
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                if await request.is_disconnected():
                    generation.cancel()
                    return Response(status_code=499)
    except ApiError:
        generation.cancel()
        await meta.record(generation, status=504, error="timeout")
        raise
    failed = next((c.error for c in generation.choices if c.error is not None), None)
    if failed is not None:
        log.error("generation failed: %s", failed)
        await meta.record(generation, status=500, error="generation failed")
        raise ApiError(500, "generation failed on the server", type="server_error", code="generation_failed")
    await meta.record(generation)
    return JSONResponse(meta.body(generation))


async def _stream(meta: _Meta, generation: gen.Generation, request: Request, deadline: float) -> AsyncIterator[bytes]:
    try:
        if meta.chat:
            yield _sse(
                meta.chunk(
                    [
                        {"index": c.index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                        for c in generation.choices
                    ]
                )
            )
        async for choice, delta in generation.events(deadline):
            if not delta and not choice.done:
                continue
            if choice.error is not None:
                continue
            if meta.tools:
                for entry in meta.tool_deltas(choice):
                    yield _sse(meta.chunk([entry]))
                continue
            entry: dict[str, Any] = {
                "index": choice.index,
                "finish_reason": choice.finish_reason if choice.done else None,
            }
            if meta.chat:
                entry["delta"] = {"content": delta} if delta else {}
            else:
                entry["text"] = delta
            if choice.done:
                entry.update(meta.extras(choice))
            yield _sse(meta.chunk([entry]))
        if any(c.error is not None for c in generation.choices):
            meta.log.update(stream_status=500, error="generation_failed")
            yield _sse(ApiError(500, "generation failed on the server", type="server_error").body())
            await meta.record(generation, status=500, error="generation failed")
            return
        await meta.record(generation)
        if meta.body_in.stream_options and meta.body_in.stream_options.include_usage:
            yield _sse(meta.chunk([], usage=meta.usage(generation)))
        yield b"data: [DONE]\n\n"
    except ApiError as err:
        generation.cancel()
        # The stream's HTTP status was 200 already: the log line says what happened instead.
        meta.log.update(stream_status=err.status, error=err.code)
        await meta.record(generation, status=err.status, error=err.code)
        yield _sse(err.body())
    finally:
        # The client went away (Starlette cancels this generator) or the stream ended: stop any row still running.
        generation.cancel()


def _text_before_calls(text: str) -> str:
    """The part of a partial answer that is surely plain text: before a ``<tool_call>`` block or anything that may
    still become one, and nothing at all while the answer could be a bare JSON call."""
    from tailorlm.tools.calling import CALL_OPEN

    if text.lstrip().startswith(("{", "[")):
        return ""
    cut = text.find(CALL_OPEN)
    if cut >= 0:
        return text[:cut]
    for k in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-k:]):
            return text[:-k]
    return text


def _sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


class _Meta:
    """What a response needs besides the generated text: ids, the route, the RAG context, the store record."""

    def __init__(
        self,
        state: ServerState,
        body: ChatCompletionRequest | CompletionRequest,
        route: Route,
        caller: Caller,
        prepared: list[gen.Prepared],
        stored: dict[str, Any],
        response_id: str,
        chat: bool,
    ) -> None:
        self.state, self.body_in, self.route, self.caller = state, body, route, caller
        self.prepared, self.stored, self.id, self.chat = prepared, stored, response_id, chat
        self.created = int(time.time())
        self.n = body.n
        self.shadow = False
        self._visible: dict[int, int] = {}  # per choice: characters of plain text streamed so far (tool requests)
        self.log: dict[str, Any] = {}  # this request's log line (sizes always; text only with log_prompts)

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        return self.prepared[0].tools if self.prepared else None

    def tool_message(self, choice: gen.Choice) -> tuple[dict[str, Any], list[Any]]:
        """The assistant message of an answer to a request with tools: its text and its ``tool_calls``."""
        from tailorlm.tools.calling import parse_tool_calls

        content, calls = parse_tool_calls(choice.text)
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if calls:
            message["tool_calls"] = [c.openai() for c in calls]
        return message, calls

    def tool_deltas(self, choice: gen.Choice) -> list[dict[str, Any]]:
        """Stream a tool request's answer: plain text as it comes, held back from where a call may begin; the
        calls, whole, once the answer is complete (OpenAI's ``delta.tool_calls`` with an index per call)."""
        sent = self._visible.get(choice.index, 0)
        if not choice.done:
            safe = _text_before_calls(choice.text)
            self._visible[choice.index] = max(sent, len(safe))
            return (
                [{"index": choice.index, "delta": {"content": safe[sent:]}, "finish_reason": None}]
                if len(safe) > sent
                else []
            )
        message, calls = self.tool_message(choice)
        out = []
        rest = (message["content"] or "")[sent:]
        if rest:
            out.append({"index": choice.index, "delta": {"content": rest}, "finish_reason": None})
        if calls:
            deltas = [{"index": k, **c.openai()} for k, c in enumerate(calls)]
            out.append({"index": choice.index, "delta": {"tool_calls": deltas}, "finish_reason": None})
        final = {"index": choice.index, "delta": {}, "finish_reason": "tool_calls" if calls else choice.finish_reason}
        out.append({**final, **self.extras(choice)})
        return out

    def choice_id(self, index: int) -> str:
        return self.id if index == 0 else f"{self.id}.{index}"

    def context(self, index: int) -> Any:
        return self.prepared[index // self.n].context

    def extras(self, choice: gen.Choice) -> dict[str, Any]:
        """Fields OpenAI clients ignore: the id feedback refers to, and a RAG answer's citations."""
        out: dict[str, Any] = {"response_id": self.choice_id(choice.index)}
        ctx = self.context(choice.index)
        if ctx is not None:
            out["citations"] = self.citations(choice)
            out["abstained"] = bool(ctx.abstain)
        return out

    def citations(self, choice: gen.Choice) -> list[dict[str, Any]] | None:
        """The shown sources a RAG answer cites as [n]; None for a System without retrieval."""
        ctx = self.context(choice.index)
        if ctx is None:
            return None
        if choice.citations is None:
            choice.citations = [c.as_json() for c in ctx.citations(choice.text)] if not ctx.abstain else []
        return choice.citations

    def usage(self, generation: gen.Generation) -> dict[str, int]:
        prompt = sum(len(p.prompt_ids) for p in self.prepared)
        completion = sum(c.completion_tokens for c in generation.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        out = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.route.model,
            "system_fingerprint": self.route.served.name,
            "choices": choices,
        }
        if usage is not None:
            out["usage"] = usage
        return out

    def body(self, generation: gen.Generation) -> dict[str, Any]:
        choices = []
        for c in generation.choices:
            entry: dict[str, Any] = {"index": c.index, "finish_reason": c.finish_reason, "logprobs": None}
            if self.chat and self.tools:
                entry["message"], calls = self.tool_message(c)
                if calls:
                    entry["finish_reason"] = "tool_calls"
            elif self.chat:
                entry["message"] = {"role": "assistant", "content": c.text}
            else:
                entry["text"] = c.text
            entry.update(self.extras(c))
            choices.append(entry)
        out = {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.route.model,
            "system_fingerprint": self.route.served.name,
            "choices": choices,
            "usage": self.usage(generation),
        }
        if choices and "citations" in choices[0]:
            out["citations"] = choices[0]["citations"]
        return out

    async def record(self, generation: gen.Generation, *, status: int = 200, error: str | None = None) -> None:
        """Store every choice (the first under the response id, the others as ``<id>.<i>``) and update metrics."""
        elapsed = time.perf_counter() - generation.started
        usage = self.usage(generation)
        self.state.charge(self.caller, usage["total_tokens"])
        served = self.route.served
        labels = {"model": self.route.model, "system": served.name, "arm": self.route.arm or ""}
        m = self.state.metrics
        endpoint = "chat" if self.chat else "completions"
        m.requests.labels(**labels, endpoint=endpoint, status=str(status)).inc()
        m.latency.labels(**labels).observe(elapsed)
        m.tokens.labels(**labels, kind="prompt").inc(usage["prompt_tokens"])
        m.tokens.labels(**labels, kind="completion").inc(usage["completion_tokens"])
        first = min((c.first_token_s for c in generation.choices if c.first_token_s is not None), default=None)
        if first is not None:
            m.ttft.labels(**labels).observe(first)
        if status == 200 and elapsed > 0:
            m.tokens_per_s.labels(**labels).observe(usage["completion_tokens"] / elapsed)
        if status != 200:
            m.errors.labels(type=error or str(status)).inc()
        records = [
            ResponseRecord(
                id=self.choice_id(c.index),
                created=time.time(),
                model=self.route.model,
                system=served.name,
                experiment=self.route.experiment,
                arm=self.route.arm,
                shadow=self.shadow,
                user=self.caller.sticky if (self.body_in.user or self.caller.key) else None,
                request=self.stored,
                response=c.text,
                finish_reason=c.finish_reason,
                prompt_tokens=len(self.prepared[c.index // self.n].prompt_ids),
                completion_tokens=c.completion_tokens,
                latency_ms=round(elapsed * 1000, 2),
                ttft_ms=round(c.first_token_s * 1000, 2) if c.first_token_s is not None else None,
                status=status,
                error=error,
                citations=self.citations(c),
                abstained=bool(self.context(c.index) is not None and self.context(c.index).abstain),
            )
            for c in generation.choices
        ]
        self.log.update(prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"])
        if self.state.config.log_prompts:
            self.log.update(prompt=self.stored, answers=[c.text for c in generation.choices])
        await run_in_threadpool(_record_all, self.state.store, records)


def _record_all(store: Any, records: list[ResponseRecord]) -> None:
    for r in records:
        store.record_response(r)


async def _shadow(
    state: ServerState, served: Any, prepare: Any, n: int, stored: dict[str, Any], route: Route, caller: Caller
) -> None:
    """Answer with a shadow System and store it; nothing here may reach or slow the client's response."""
    try:
        prepared = await prepare(served)
        generation = gen.start(prepared, n)
        async for _ in generation.events(time.monotonic() + state.config.limits.timeout_s):
            pass
        shadow_route = Route(route.model, served, experiment=route.experiment, arm=None)
        meta = _Meta(state, _NoUser(), shadow_route, caller, prepared, stored, f"shadow-{uuid.uuid4().hex}", True)
        meta.n, meta.shadow = n, True
        records_status = 500 if any(c.error for c in generation.choices) else 200
        await meta.record(generation, status=records_status)
    except Exception as err:  # busy, timed out or failed: the shadow answer is skipped, the client never knows
        log.info("shadow answer from %s skipped: %s", served.name, type(err).__name__)


class _NoUser:
    user = None
    n = 1


# -- embeddings and feedback ---------------------------------------------------------------------------------------
async def embeddings(state: ServerState, body: EmbeddingRequest) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > state.config.limits.embedding_inputs:
        raise ApiError(400, f"send 1 to {state.config.limits.embedding_inputs} texts", param="input")
    served = state.served.get(body.model)
    if served is None or served.rag is None:
        rag = [name for name, s in state.served.items() if s.rag is not None]
        raise ApiError(
            404,
            f"{body.model!r} is not a served RAG System; embeddings come from one: {', '.join(rag) or 'none'}",
            code="model_not_found",
            param="model",
        )
    if body.dimensions is not None:
        raise ApiError(400, "dimensions is not supported: the embedder has a fixed size", param="dimensions")

    def embed() -> Any:
        with served.rag_lock:
            return served.rag.index.embedder.embed(texts)

    vectors = await run_in_threadpool(embed)
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "model": body.model,
        "data": [
            {"object": "embedding", "index": i, "embedding": [float(x) for x in v]} for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def feedback(state: ServerState, body: FeedbackRequest, key: KeyInfo | None) -> dict[str, Any]:
    try:
        record = FeedbackRecord(**body.model_dump(exclude={"user"}), user=body.user or (key.id if key else None))
    except ValueError as err:
        raise ApiError(400, str(err).splitlines()[-1] if str(err) else "invalid feedback") from None
    try:
        await run_in_threadpool(state.store.record_feedback, record)
    except UnknownResponseError as err:
        raise ApiError(404, err.message, type="not_found_error", code="response_not_found") from None
    for kind in ("rating", "score", "comment", "edited", "choice"):
        if getattr(record, kind) is not None:
            state.metrics.feedback.labels(kind=kind).inc()
    return {"id": record.id, "object": "feedback", "response_id": record.response_id}
