"""The ``openai`` engine: any OpenAI-compatible endpoint (OpenAI itself, vLLM, llama.cpp server, our own server).

It is how tailorlm talks to a model it does not host: a teacher for distillation, a judge for evaluation.
The official ``openai`` client does the HTTP, the SSE parsing, the timeouts and the retries (429, 5xx and
connection errors, with exponential backoff and ``Retry-After``), so this file only maps our contract onto
the API and turns the client's exceptions into ``TailorError``s a user can act on.

API key: the ``api_key`` argument, else the environment variable ``api_key_env`` (``OPENAI_API_KEY``). When
neither is set and ``base_url`` is a local server (localhost or a private network address), a placeholder key
is sent, because vLLM, llama.cpp and most local OpenAI-compatible servers ignore the key, while the client
refuses to start without one. A remote endpoint without a key is an error that names the variable.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import openai

from tailorlm.errors import ModelNotFoundError, TailorError
from tailorlm.models.engines.base import (
    Completion,
    FinishReason,
    GenerationParams,
    Message,
    Request,
    StreamChunk,
    Usage,
    truncate_at_stop,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Sent when a local server needs no key; the value is arbitrary but recognisable in server logs.
PLACEHOLDER_API_KEY = "tailorlm-no-key"
# The API rejects more than 4 stop strings; the rest are applied on our side.
MAX_API_STOP = 4


def is_local_url(url: str) -> bool:
    """True for loopback and private-network hosts, where OpenAI-compatible servers usually run without auth."""
    host = urlparse(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


class OpenAIEngine:
    """Generate with a model behind an OpenAI-compatible HTTP API.

    Chat requests go to ``/v1/chat/completions``, raw prompts to ``/v1/completions``. A batch runs on
    ``concurrency`` threads (the API answers one request per call) and comes back in input order.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
    ) -> None:
        if concurrency < 1:
            raise TailorError(f"concurrency must be at least 1, got {concurrency}")
        self.name = model
        self.model = model
        # Resolve the URL ourselves (the client would read OPENAI_BASE_URL too) so that error messages and the
        # local-server check see the same URL the client uses.
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency

        key = api_key or os.environ.get(api_key_env)
        if not key:
            if not is_local_url(self.base_url):
                raise TailorError(
                    f"no API key for {self.base_url}: ${api_key_env} is not set",
                    hint=f"export {api_key_env}=... or pass api_key=",
                )
            key = PLACEHOLDER_API_KEY
        # The client's own timeout and retry policy; a hand-written loop would duplicate its backoff and
        # Retry-After handling.
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=timeout_s, max_retries=max_retries)

    # --- the Engine contract -------------------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[str | Sequence[Message] | Request],
        params: GenerationParams | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        """Answer every request, ``concurrency`` at a time; ``map`` keeps the input order.

        ``on_progress(1)`` is called as each request completes.
        """
        params = params or GenerationParams()
        reqs = [Request.of(r) for r in requests]

        def one(r: Request) -> Completion:
            completion = self._generate_one(r, params)
            if on_progress is not None:
                on_progress(1)
            return completion

        if not reqs:
            return []
        if len(reqs) == 1 or self.concurrency == 1:
            return [one(r) for r in reqs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(reqs))) as pool:
            return list(pool.map(one, reqs))

    def stream(
        self, request: str | Sequence[Message] | Request, params: GenerationParams | None = None
    ) -> Iterator[StreamChunk]:
        """Yield text deltas as they arrive; a final empty-text chunk carries ``finish_reason`` and ``usage``."""
        params = params or GenerationParams()
        req = Request.of(request)
        stops = [s for s in params.stop if s]
        # Hold back the last len(longest stop) - 1 characters: a stop string may straddle two deltas, and text
        # already yielded cannot be taken back.
        hold = max((len(s) for s in stops), default=1) - 1
        buf = ""
        finish: FinishReason = "stop"
        usage = Usage()
        stopped = False
        with self._errors():
            kwargs = self._kwargs(req, params)
            if req.prompt is not None:
                chunks: Any = self._client.completions.create(
                    **kwargs, stream=True, stream_options={"include_usage": True}
                )
            else:
                chunks = self._client.chat.completions.create(
                    **kwargs, stream=True, stream_options={"include_usage": True}
                )
            with contextlib.closing(chunks):
                for chunk in chunks:
                    # With include_usage the last chunk has no choices, only usage; servers that ignore the
                    # option never send it and usage stays zero.
                    if getattr(chunk, "usage", None) is not None:
                        usage = _usage(chunk.usage)
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    if choice.finish_reason is not None and not stopped:
                        finish = _finish(choice.finish_reason)
                    # Once a client-side stop string has matched we keep reading only for the usage chunk:
                    # the server has generated (and billed) those tokens anyway, so the count stays honest.
                    if stopped:
                        continue
                    delta = choice.text if req.prompt is not None else choice.delta.content
                    if not delta:
                        continue
                    buf += delta
                    cut, stopped = truncate_at_stop(buf, stops)
                    if stopped:
                        finish = "stop"
                        buf = ""
                        if cut:
                            yield StreamChunk(text=cut)
                        continue
                    safe = len(buf) - hold
                    if safe > 0:
                        yield StreamChunk(text=buf[:safe])
                        buf = buf[safe:]
        yield StreamChunk(text=buf, finish_reason=finish, usage=usage)

    # --- one request ---------------------------------------------------------------------------------------

    def _kwargs(self, req: Request, params: GenerationParams) -> dict[str, Any]:
        """Map GenerationParams onto the API's arguments (shared by chat and completions)."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            # Always sent: the API's default temperature is 1.0, ours is greedy.
            "temperature": params.temperature,
        }
        if req.prompt is not None:
            kwargs["prompt"] = req.prompt
        else:
            kwargs["messages"] = req.messages
        # top_p=1.0 is the API default; leaving it out avoids servers that reject temperature and top_p together.
        if params.top_p != 1.0:
            kwargs["top_p"] = params.top_p
        stops = [s for s in params.stop if s]
        if stops:
            kwargs["stop"] = stops[:MAX_API_STOP]
        if params.seed is not None:
            kwargs["seed"] = params.seed
        return kwargs

    def _generate_one(self, req: Request, params: GenerationParams) -> Completion:
        kwargs = self._kwargs(req, params)
        t0 = time.perf_counter()
        with self._errors():
            if req.prompt is not None:
                if params.logprobs:
                    kwargs["logprobs"] = 1  # the legacy API wants the top-k count; 1 gives the sampled token
                resp: Any = self._client.completions.create(**kwargs)
            else:
                if params.logprobs:
                    kwargs["logprobs"] = True
                resp = self._client.chat.completions.create(**kwargs)
        latency = time.perf_counter() - t0

        usage = _usage(resp.usage)
        if not resp.choices:
            return Completion(text="", finish_reason="stop", usage=usage, latency_s=latency)
        choice = resp.choices[0]
        finish = _finish(choice.finish_reason)
        tokens: list[str] | None = None
        logprobs: list[float] | None = None
        if req.prompt is not None:
            text = choice.text or ""
            if params.logprobs and choice.logprobs is not None and choice.logprobs.token_logprobs is not None:
                tokens = list(choice.logprobs.tokens or [])
                logprobs = [float(lp) if lp is not None else 0.0 for lp in choice.logprobs.token_logprobs]
        else:
            text = choice.message.content or ""  # None when the model answered with tool calls only
            if params.logprobs and choice.logprobs is not None and choice.logprobs.content is not None:
                tokens = [t.token for t in choice.logprobs.content]
                logprobs = [float(t.logprob) for t in choice.logprobs.content]

        # All stop strings are applied here too: the ones past the API's limit of 4, and any a server ignored.
        text, stopped = truncate_at_stop(text, params.stop)
        if stopped:
            finish = "stop"
            if logprobs is not None and tokens is not None:
                logprobs = logprobs[: _tokens_within(tokens, len(text))]
        return Completion(text=text, finish_reason=finish, usage=usage, logprobs=logprobs, latency_s=latency)

    # --- errors --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn the client's exceptions (raised after its retries are spent) into messages that say what to do."""
        retries = f"after {self.max_retries} retr{'y' if self.max_retries == 1 else 'ies'}"
        try:
            yield
        except openai.APITimeoutError as e:  # a subclass of APIConnectionError, so it comes first
            raise TailorError(
                f"request to {self.base_url} timed out {retries} (timeout {self.timeout_s:g}s)",
                hint="check that the server is up and not overloaded, or raise timeout_s",
            ) from e
        except openai.APIConnectionError as e:
            raise TailorError(
                f"cannot connect to the OpenAI-compatible server at {self.base_url} {retries}",
                hint="check that the server is running and that base_url is right (it usually ends in /v1)",
            ) from e
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise TailorError(
                f"{self.base_url} rejected the API key ({e.status_code}): {_server_message(e)}",
                hint=f"set ${self.api_key_env} to a valid key, or pass api_key=",
            ) from e
        except openai.NotFoundError as e:
            raise ModelNotFoundError(
                f"model {self.model!r} not found at {self.base_url} (404): {_server_message(e)}",
                hint=f"GET {self.base_url}/models lists the served models; base_url usually ends in /v1",
            ) from e
        except openai.RateLimitError as e:
            raise TailorError(
                f"{self.base_url} is still rate-limiting {retries} (429): {_server_message(e)}",
                hint="lower concurrency or raise max_retries",
            ) from e
        except openai.APIStatusError as e:
            hint = "check the server" if e.status_code >= 500 else "check the request parameters for this server"
            raise TailorError(
                f"{self.base_url} answered {e.status_code}"
                + (f" {retries}" if e.status_code >= 500 else "")
                + f": {_server_message(e)}",
                hint=f"{hint} at {self.base_url}",
            ) from e
        except openai.APIError as e:  # e.g. an error event in the middle of a stream
            raise TailorError(f"{self.base_url} returned an error: {e.message}") from e


def _usage(u: Any) -> Usage:
    """Usage is optional in many OpenAI-compatible servers; missing counts are zero."""
    if u is None:
        return Usage()
    return Usage(prompt_tokens=u.prompt_tokens or 0, completion_tokens=u.completion_tokens or 0)


def _finish(reason: str | None) -> FinishReason:
    """Our contract knows only "stop" and "length"; tool_calls, content_filter and the like ended on purpose."""
    return "length" if reason == "length" else "stop"


def _tokens_within(tokens: Sequence[str], n_chars: int) -> int:
    """How many leading tokens fit inside the first ``n_chars`` characters (to trim logprobs with the text)."""
    total = 0
    for i, tok in enumerate(tokens):
        total += len(tok)
        if total > n_chars:
            return i
    return len(tokens)


def _server_message(e: openai.APIStatusError) -> str:
    """The server's own words: OpenAI puts them in ``{"error": {"message": ...}}``, others in the body or text."""
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    with contextlib.suppress(Exception):
        if e.response.text:
            return e.response.text[:300]
    return e.message
