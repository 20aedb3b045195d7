"""Security defaults (no open server on a public address, per-key rate limits, CORS off unless configured, no prompt
text or keys in logs), shadow Systems, and `tailor serve --report`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from serve_harness import make_state, serving
from tailorlm.cli.main import app
from tailorlm.core.system import System
from tailorlm.errors import ConfigError

pytestmark = pytest.mark.integration
SECRET = "SECRET-PROMPT-4242"


def _tiny(tiny_model_dir: Path, name: str = "tiny") -> System:
    return System(name=name, model=str(tiny_model_dir), generation={"max_new_tokens": 4})


def _chat(
    base: str, model: str = "tiny", content: str = "hi", headers: dict[str, str] | None = None, **kw: object
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **kw}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60, headers=headers)


def test_refuses_to_run_open_on_a_public_address(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without API keys"):
        make_state([_tiny(tiny_model_dir)], tmp_path, host="0.0.0.0")
    state = make_state([_tiny(tiny_model_dir)], tmp_path, host="0.0.0.0", allow_open=True)
    assert state.open


def test_per_key_rate_limit_answers_429(tiny_model_dir: Path, tmp_path: Path) -> None:
    state = make_state([_tiny(tiny_model_dir)], tmp_path, rate_limit={"rpm": 2})
    with serving(state) as base:
        assert [_chat(base).status_code for _ in range(2)] == [200, 200]
        third = _chat(base)
        assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
        assert third.json()["error"]["code"] == "rate_limit_exceeded"


def test_cors_is_off_unless_configured(tiny_model_dir: Path, tmp_path: Path) -> None:
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    with serving(make_state([_tiny(tiny_model_dir)], tmp_path)) as base:
        r = httpx.options(f"{base}/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    state = make_state([_tiny(tiny_model_dir)], tmp_path / "cors", cors_origins=["https://example.org"])
    with serving(state) as base:
        r = httpx.options(f"{base}/v1/chat/completions", headers=preflight)
        assert r.headers.get("access-control-allow-origin") == "https://example.org"


def test_logs_hold_ids_and_sizes_but_no_prompt_text_or_key(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tailorlm.serve.auth import KeyStore

    key, info = KeyStore(tmp_path / "keys.json").create("alice")
    caplog.set_level(logging.INFO, logger="tailorlm.serve")
    with serving(make_state([_tiny(tiny_model_dir)], tmp_path)) as base:
        assert _chat(base, content=SECRET, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    lines = [json.dumps(getattr(r, "fields", {})) + r.getMessage() for r in caplog.records]
    request_lines = [line for line in lines if '"request_id"' in line]
    assert request_lines and info.id in request_lines[0] and '"prompt_tokens"' in request_lines[0]
    assert not any(SECRET in line or key in line for line in lines)

    caplog.clear()
    loud = make_state([_tiny(tiny_model_dir)], tmp_path / "loud", log_prompts=True)
    with serving(loud) as base:
        assert _chat(base, content=SECRET).status_code == 200
    assert any(SECRET in json.dumps(getattr(r, "fields", {})) for r in caplog.records)


def test_shadow_system_answers_unseen_and_is_stored(tiny_model_dir: Path, tmp_path: Path) -> None:
    systems = [_tiny(tiny_model_dir, "live-a"), _tiny(tiny_model_dir, "live-b"), _tiny(tiny_model_dir, "candidate")]
    experiment = {
        "name": "support",
        "arms": {"a": {"system": "live-a"}, "b": {"system": "live-b"}},
        "shadow": ["candidate"],
    }
    state = make_state(systems, tmp_path, experiments=[experiment])
    with serving(state) as base:
        r = _chat(base, model="support", content="shadow me", user="u1").json()
        assert r["system_fingerprint"] in ("live-a", "live-b")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            shadows = [x for x in state.store.responses() if x.shadow]
            if shadows:
                break
            time.sleep(0.1)
        assert len(shadows) == 1 and shadows[0].system == "candidate" and shadows[0].experiment == "support"
        assert shadows[0].request == state.store.get_response(r["id"]).request
        assert shadows[0].id != r["id"]

    result = CliRunner().invoke(app, ["serve", "--report", "--store", str(tmp_path / "feedback.db"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "candidate" in json.dumps(report) and "live-" in json.dumps(report)
    table = CliRunner().invoke(app, ["serve", "--report", "--store", str(tmp_path / "feedback.db")])
    assert table.exit_code == 0 and "traffic" in table.stdout
