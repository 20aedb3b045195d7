"""The ASGI layer in front of every route: a request id, the body-size limit, draining, in-flight counting and one
structured log line per request.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: that one buffers and re-wraps streaming
responses, which delays server-sent events and hides client disconnects from the route.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from tailorlm.serve.logs import log_request
from tailorlm.serve.state import ApiError, ServerState

log = logging.getLogger("tailorlm.serve")
Scope = dict[str, Any]


class BodyTooLarge(Exception):
    pass


async def send_error(send: Any, err: ApiError, request_id: str) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope.get("path", "")
        start = time.perf_counter()
        status = {"code": 0}
        if state.draining and path not in ("/health", "/metrics"):
            await send_error(
                send,
                ApiError(
                    503,
                    "the server is shutting down",
                    type="server_error",
                    code="draining",
                    headers={"Retry-After": "5"},
                ),
                request_id,
            )
            return
        limit = state.config.limits.body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_error(send, _too_large(limit), request_id)
            return
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        tracked = path.startswith("/v1/")
        if tracked:
            state.inflight += 1
            state.metrics.inflight.inc()
        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not status["code"]:
                await send_error(send, _too_large(limit), request_id)
                status["code"] = 413
        finally:
            if tracked:
                state.inflight -= 1
                state.metrics.inflight.dec()
            if path not in ("/health", "/metrics", "/ready"):
                fields = log_fields(scope)
                log_request(
                    log,
                    request_id=request_id,
                    method=scope.get("method"),
                    path=path,
                    status=status["code"],
                    ms=round((time.perf_counter() - start) * 1000, 1),
                    **fields,
                )


def log_fields(scope: Scope) -> dict[str, Any]:
    """Fields a route adds to its request's log line (model, System, key id; never prompt text or keys)."""
    return scope.setdefault("state", {}).setdefault("log", {})


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")[:64]
            if text.replace("-", "").replace("_", "").isalnum():
                return text
    return f"req-{uuid.uuid4().hex[:16]}"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than this server's limit of {limit} bytes", code="too_large")
