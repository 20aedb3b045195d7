"""Hostile and broken requests each get a 4xx with a message in OpenAI's error shape, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_harness import make_state, serving
from tailorlm.core.system import System

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
GOOD = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    system = System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 4})
    state = make_state([system], tmp_path_factory.mktemp("bad"), limits={"max_tokens": 64, "max_prompt_tokens": 64})
    with serving(state) as url:
        yield url


def _post(base: str, path: str, content: bytes | None = None, json: Any = None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(base + path, content=content, json=json, headers=headers, timeout=30)


CASES: list[tuple[str, str, bytes | None, Any, int, str]] = [
    ("malformed JSON", CHAT, b'{"model": "tiny", "messages": [', None, 400, "JSON"),
    ("not an object", CHAT, b"[1, 2, 3]", None, 400, ""),
    ("wrong type", CHAT, None, {**GOOD, "max_tokens": "many"}, 400, "max_tokens"),
    ("wrong message type", CHAT, None, {**GOOD, "messages": "hi"}, 400, "messages"),
    ("unknown field", CHAT, None, {**GOOD, "frobnicate": 1}, 400, "frobnicate"),
    (
        "unknown message field",
        CHAT,
        None,
        {**GOOD, "messages": [{"role": "user", "content": "x", "mood": 1}]},
        400,
        "mood",
    ),
    ("unknown role", CHAT, None, {**GOOD, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("empty messages", CHAT, None, {**GOOD, "messages": []}, 400, "messages"),
    ("last turn not user", CHAT, None, {**GOOD, "messages": [{"role": "assistant", "content": "x"}]}, 400, "user"),
    ("huge max_tokens", CHAT, None, {**GOOD, "max_tokens": 10**9}, 400, "max_tokens"),
    ("negative max_tokens", CHAT, None, {**GOOD, "max_tokens": -1}, 400, "max_tokens"),
    ("huge n", CHAT, None, {**GOOD, "n": 1000}, 400, "n"),
    ("temperature out of range", CHAT, None, {**GOOD, "temperature": 9}, 400, "temperature"),
    ("too many stops", CHAT, None, {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    (
        "prompt over the token limit",
        CHAT,
        None,
        {**GOOD, "messages": [{"role": "user", "content": "word " * 400}]},
        400,
        "tokens",
    ),
    (
        "image content part",
        CHAT,
        None,
        {
            **GOOD,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
                }
            ],
        },
        400,
        "image_url",
    ),
    (
        "invalid UTF-8",
        CHAT,
        b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        None,
        400,
        "",
    ),
    ("missing model", CHAT, None, {"messages": GOOD["messages"]}, 400, "model"),
    ("empty completion prompt", "/v1/completions", None, {"model": "tiny", "prompt": []}, 400, "prompt"),
    ("feedback without a verdict", "/v1/feedback", None, {"response_id": "x"}, 400, ""),
    ("feedback score out of range", "/v1/feedback", None, {"response_id": "x", "score": 9}, 400, "score"),
    ("unknown route", "/v1/nothing", None, {}, 404, ""),
]


@pytest.mark.parametrize(("what", "path", "raw", "body", "status", "mentions"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_4xx_and_server_keeps_serving(
    base: str, what: str, path: str, raw: bytes | None, body: Any, status: int, mentions: str
) -> None:
    r = _post(base, path, content=raw, json=body)
    assert r.status_code == status, (what, r.status_code, r.text)
    error = r.json()["error"]
    assert error["message"] and error["type"], r.text
    assert mentions.lower() in error["message"].lower() or mentions == (error.get("param") or ""), r.text
    assert _post(base, CHAT, json=GOOD).status_code == 200
