"""A tiny but real OpenAI-protocol HTTP server, for testing clients against the wire protocol.

It stands in for a third-party endpoint (a teacher or judge model) so that the ``openai`` engine is tested
through the official client, real sockets, real JSON and real SSE, with nothing mocked. Standard library
only: a ``ThreadingHTTPServer`` on 127.0.0.1, port 0, in a background thread.

Replies are deterministic: a canned answer per prompt (``answers``), else the words of the last user message
(or prompt) in reverse order. A "token" is a whitespace-separated word, so ``max_tokens`` truncates words.

    with OpenAIStub(answers={"2+2?": "4"}) as stub:
        OpenAIEngine("stub-model", base_url=stub.base_url)
        stub.fail_next(1, status=500)   # the next request answers 500 (with a short Retry-After)
        stub.delay_s = 1.0              # every reply waits, to provoke timeouts
        stub.requests[-1].body          # what the client sent
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# OpenAI rejects more than 4 stop strings with a 400; the stub does too, so clients must handle the rest.
MAX_STOP = 4


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class _Failure:
    remaining: int = 0
    status: int = 500
    retry_after_ms: int | None = None


@dataclass
class OpenAIStub:
    """An OpenAI-compatible server. Knobs can be changed while it runs; they are read per request."""

    answers: Mapping[str, str] = field(default_factory=dict)
    models: Sequence[str] = ("stub-model",)
    api_key: str | None = None  # when set, any other Bearer token gets 401
    delay_s: float = 0.0  # sleep before answering (interrupted at shutdown)
    usage: bool = True  # False: omit usage everywhere, and ignore stream_options, as some servers do
    requests: list[RecordedRequest] = field(default_factory=list)
    max_in_flight: int = 0  # the most requests seen being handled at once (to observe client concurrency)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._failure = _Failure()
        self._in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self) -> OpenAIStub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True  # a handler stuck in delay_s must not block interpreter exit
        # A short poll interval makes shutdown() return quickly.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # wakes handlers sleeping in delay_s
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._server is not None, "use OpenAIStub as a context manager"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- knobs ---------------------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, *, retry_after_ms: int | None = 10) -> None:
        """Answer the next ``n`` requests with ``status``. ``retry-after-ms`` keeps client backoff short in tests."""
        with self._lock:
            self._failure = _Failure(remaining=n, status=status, retry_after_ms=retry_after_ms)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # --- behaviour (called from handler threads) -----------------------------------------------------------

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            if self._failure.remaining <= 0:
                return None
            self._failure.remaining -= 1
            return _Failure(1, self._failure.status, self._failure.retry_after_ms)

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def reply_for(self, body: Mapping[str, Any]) -> tuple[str, str, int]:
        """``(text, finish_reason, prompt_tokens)`` for a chat or completions body, honouring max_tokens and stop."""
        if "messages" in body:
            msgs = body["messages"]
            prompt_text = " ".join(_content_text(m.get("content")) for m in msgs)
            user = [m for m in msgs if m.get("role") == "user"]
            key = _content_text(user[-1].get("content")) if user else ""
        else:
            prompt = body.get("prompt", "")
            key = prompt_text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        text = self.answers.get(key, " ".join(reversed(key.split())))
        finish = "stop"
        words = text.split()
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens is not None and len(words) > int(max_tokens):
            text, finish = " ".join(words[: int(max_tokens)]), "length"
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        cuts = [i for s in stops if s and (i := text.find(s)) >= 0]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        return text, finish, len(prompt_text.split())


def _content_text(content: Any) -> str:
    """Message content is a string or a list of parts (``{"type": "text", "text": ...}``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _tokens(text: str) -> list[str]:
    """Split into "tokens" that concatenate back to ``text``: the first word, then " word" for each next one."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


def _error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _make_handler(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, and an SSE stream ends when the connection closes.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        # --- plumbing ------------------------------------------------------------------------------------

        def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _send_sse(self, events: Iterator[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for event in events:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            stub._record(RecordedRequest(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            try:
                self._route(method, body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout fired during delay_s)
            finally:
                stub._done()

        def _route(self, method: str, body: dict[str, Any] | None) -> None:
            if stub.delay_s and stub._stopping.wait(stub.delay_s):
                return  # shutting down
            failure = stub._take_failure()
            if failure is not None:
                headers = {} if failure.retry_after_ms is None else {"retry-after-ms": str(failure.retry_after_ms)}
                msg = f"injected failure ({failure.status})"
                self._send_json(failure.status, _error(msg, "server_error"), headers)
                return
            if stub.api_key is not None and self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                self._send_json(401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
                return
            path = self.path.split("?", 1)[0]
            if method == "GET" and path == "/v1/models":
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in stub.models]
                self._send_json(200, {"object": "list", "data": data})
                return
            if method == "POST" and path == "/v1/embeddings" and isinstance(body, dict):
                self._send_json(200, _embeddings(body))
                return
            if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
                self._send_json(404, _error(f"no route {method} {path}", "invalid_request_error"))
                return
            if not isinstance(body, dict):
                self._send_json(400, _error("body must be a JSON object", "invalid_request_error"))
                return
            model = body.get("model")
            if model not in stub.models:
                msg = f"The model `{model}` does not exist or you do not have access to it."
                self._send_json(404, _error(msg, "invalid_request_error", "model_not_found"))
                return
            stop = body.get("stop")
            if isinstance(stop, list) and len(stop) > MAX_STOP:
                msg = f"'stop' accepts at most {MAX_STOP} strings, got {len(stop)}"
                self._send_json(400, _error(msg, "invalid_request_error"))
                return
            chat = path == "/v1/chat/completions"
            if body.get("stream"):
                self._send_sse(_stream_events(stub, body, chat))
            else:
                self._send_json(200, _response(stub, body, chat))

    return Handler


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """Deterministic 8-d bag-of-letters vectors: texts sharing letters are close, as real embeddings would be."""
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    data = []
    for i, text in enumerate(texts):
        vec = [0.0] * 8
        for ch in str(text).lower():
            if ch.isalpha():
                vec[(ord(ch) - 97) % 8] += 1.0
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(len(_tokens(str(t))) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def _logprob(i: int) -> float:
    return -0.1 * (i + 1)  # any deterministic, distinct values will do


def _response(stub: OpenAIStub, body: dict[str, Any], chat: bool) -> dict[str, Any]:
    text, finish, n_prompt = stub.reply_for(body)
    toks = _tokens(text)
    created = int(time.time())
    choice: dict[str, Any]
    if chat:
        logprobs = None
        if body.get("logprobs"):
            content = [
                {"token": t, "logprob": _logprob(i), "bytes": None, "top_logprobs": []} for i, t in enumerate(toks)
            ]
            logprobs = {"content": content}
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}
        out = {"id": "chatcmpl-stub", "object": "chat.completion", "created": created, "model": body["model"]}
    else:
        logprobs = None
        if body.get("logprobs"):
            offsets = [sum(len(t) for t in toks[:i]) for i in range(len(toks))]
            token_logprobs = [_logprob(i) for i in range(len(toks))]
            logprobs = {"tokens": toks, "token_logprobs": token_logprobs, "top_logprobs": None, "text_offset": offsets}
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}
        out = {"id": "cmpl-stub", "object": "text_completion", "created": created, "model": body["model"]}
    out["choices"] = [choice]
    if stub.usage:
        out["usage"] = _usage(n_prompt, len(toks))
    return out


def _stream_events(stub: OpenAIStub, body: dict[str, Any], chat: bool) -> Iterator[dict[str, Any]]:
    """One event per token, then one carrying finish_reason, then (if asked for) one carrying only usage."""
    text, finish, n_prompt = stub.reply_for(body)
    toks = _tokens(text)
    head: dict[str, Any] = {
        "id": "chatcmpl-stub" if chat else "cmpl-stub",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": body["model"],
    }

    def choice(piece: str | None, finish_reason: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if piece is not None:
                delta["content"] = piece
            return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {"index": 0, "text": piece or "", "finish_reason": finish_reason, "logprobs": None}

    if chat:
        yield {**head, "choices": [choice("", None, first=True)]}
    for tok in toks:
        yield {**head, "choices": [choice(tok, None)]}
    yield {**head, "choices": [choice(None, finish)]}
    if stub.usage and (body.get("stream_options") or {}).get("include_usage"):
        yield {**head, "choices": [], "usage": _usage(n_prompt, len(toks))}
