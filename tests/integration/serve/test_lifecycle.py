"""The server's life: SIGTERM drains (in-flight requests finish, new ones get 503, then it exits 0), a request past
its timeout gets 504, a client that disconnects stops its generation, and /metrics reports what happened."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_harness import make_state, serve_process, serving
from tailorlm.core.system import System

pytestmark = pytest.mark.integration


def _chat(base: str, max_tokens: int = 4, **extra: Any) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens, **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)


def test_sigterm_drains_in_flight_and_refuses_new(tiny_model_dir: Path, tmp_path: Path) -> None:
    System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 4}).save(tmp_path / "sys")
    # A 1.5 s batching window keeps the first request in flight long enough to signal the server meanwhile.
    args = [
        str(tmp_path / "sys"),
        "--store",
        str(tmp_path / "fb.db"),
        "--keys-file",
        str(tmp_path / "keys.json"),
        "--set",
        "batching.window_ms=1500",
    ]
    with serve_process(args, tmp_path) as (base, proc):
        first: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: first.setdefault("r", _chat(base)))
        worker.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        refused = _chat(base)
        assert refused.status_code == 503 and refused.headers.get("retry-after")
        assert httpx.get(f"{base}/ready", timeout=5).status_code == 503
        worker.join(30)
        assert first["r"].status_code == 200, first["r"].text
        assert proc.wait(30) == 0


def test_timeout_is_504_and_is_recorded(tiny_model_dir: Path, tmp_path: Path) -> None:
    system = System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 4})
    state = make_state([system], tmp_path, limits={"timeout_s": 0.3}, batching={"window_ms": 1500})
    with serving(state) as base:
        r = _chat(base)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert [x.status for x in state.store.responses()] == [504]


def test_disconnected_stream_stops_its_generation(tiny_model_dir: Path, tmp_path: Path) -> None:
    system = System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 1024})
    state = make_state([system], tmp_path, limits={"max_tokens": 4096})
    engine = state.served["tiny"].engine
    seen: list[Any] = []
    run_rows = engine.run_rows

    def slow_rows(rows: Any) -> None:  # observe the rows, and give the client time to leave mid-answer
        seen.extend(rows)
        original = rows[0].sink

        def sink(chunk: Any) -> None:
            time.sleep(0.01)
            original(chunk)

        rows[0].sink = sink
        run_rows(rows)

    engine.run_rows = slow_rows
    with serving(state) as base:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "go"}], "max_tokens": 4000, "stream": True}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and '"content"' in line and '"content": ""' not in line:
                    break
        deadline = time.monotonic() + 10
        while not (seen and seen[0].cancelled.is_set()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen and seen[0].cancelled.is_set()
        time.sleep(0.5)
        assert seen[0].text is not None and len(seen[0].text.ids) < 4000
        assert _chat(base).status_code == 200


def test_metrics_and_health(tiny_model_dir: Path, tmp_path: Path) -> None:
    system = System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 4})
    state = make_state([system], tmp_path)
    with serving(state) as base:
        assert _chat(base, stream=True).status_code == 200
        assert _chat(base).status_code == 200
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        text = httpx.get(f"{base}/metrics").text
        for name in (
            "tailor_requests_total",
            "tailor_request_seconds_bucket",
            "tailor_time_to_first_token_seconds",
            "tailor_tokens_total",
            "tailor_queue_depth",
            "tailor_batch_rows",
        ):
            assert name in text, name
        assert 'model="tiny",status="200",system="tiny"' in text.replace('arm="",', "").replace('endpoint="chat",', "")
