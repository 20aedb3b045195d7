"""The OpenAI-compatible app: ``create_app(state)`` builds a FastAPI app over a loaded ``ServerState``.

Routes: ``/v1/chat/completions`` (streamed or not), ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``,
``/v1/feedback``; ``/health``, ``/ready``, ``/metrics``; the web UI at ``/`` (serve/ui.py). Every error has OpenAI's
shape ``{"error": {"message", "type", "param", "code"}}`` and status code.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tailorlm.serve.auth import bearer_token
from tailorlm.serve.guard import Guard, log_fields
from tailorlm.serve.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, FeedbackRequest
from tailorlm.serve.state import ApiError, ServerState

log = logging.getLogger("tailorlm.serve")


def create_app(state: ServerState) -> Any:
    """The ASGI app: FastAPI routes behind the Guard middleware (request id, body limit, draining, logs)."""
    app = FastAPI(title="tailorlm", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tailor = state
    _errors(app)
    _routes(app, state)
    if state.config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=state.config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    if state.config.ui:
        from tailorlm.serve.ui import mount_ui

        mount_ui(app, state)
    return Guard(app, state)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        log_fields(request.scope)["error"] = err.code or err.type
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        kind = first.get("type", "")
        if kind == "json_invalid":
            message = f"the body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}"
        elif kind == "extra_forbidden":
            message = f"unknown field {param!r}"
        elif kind == "missing":
            message = f"missing required field {param!r}"
        else:
            message = f"{param or 'body'}: {first.get('msg', 'invalid')}"
        return JSONResponse(ApiError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        body = ApiError(err.status_code, str(err.detail), type=kind).body()
        return JSONResponse(body, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(UnicodeDecodeError)
    async def bad_utf8(request: Request, err: UnicodeDecodeError) -> JSONResponse:
        return JSONResponse(ApiError(400, "the body is not valid UTF-8").body(), status_code=400)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _routes(app: FastAPI, state: ServerState) -> None:
    from tailorlm.serve import endpoints

    def auth(request: Request, *, admin: bool = False) -> Any:
        key = state.authenticate(bearer_token(request.headers.get("authorization")), _client(request), admin=admin)
        log_fields(request.scope)["key"] = key.id if key else None
        return key

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        ok = not state.draining and bool(state.served)
        body = {"status": "ready" if ok else "draining", "models": state.model_names()}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        auth(request, admin=True)
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        state.metrics.refresh()
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        auth(request)
        return endpoints.list_models(state)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        key = auth(request)
        return await endpoints.chat_completion(state, body, request, key, _client(request))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        key = auth(request)
        return await endpoints.text_completion(state, body, request, key, _client(request))

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
        auth(request)
        return await endpoints.embeddings(state, body)

    @app.post("/v1/feedback", status_code=201)
    async def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
        key = auth(request)
        return await endpoints.feedback(state, body, key)

    @app.get("/v1/responses/{response_id}")
    async def response(response_id: str, request: Request) -> dict[str, Any]:
        auth(request)
        record = await run_in_threadpool(state.store.get_response, response_id)
        if record is None:
            raise ApiError(404, f"no response {response_id!r}", type="not_found_error", code="response_not_found")
        return json.loads(record.model_dump_json(exclude={"request"}))
