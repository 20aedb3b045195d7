"""The web UI's server side: the runs listing, the report route's path safety, and its admin-only access."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tailorlm.serve.auth import KeyStore
from tailorlm.serve.config import ServeConfig
from tailorlm.serve.state import ServerState
from tailorlm.serve.ui import COOKIE, ReportPass, list_ui_runs, report_file

pytestmark = pytest.mark.unit

REPORT = "<!doctype html><title>Ladder report</title><p>the report</p>"


def make_run(
    root: Path,
    run_id: str,
    *,
    kind: str = "sft",
    created: str = "2025-01-01T12:00:00+00:00",
    metrics: dict[str, Any] | None = None,
    report: str | None = None,
) -> Path:
    run = root / run_id
    (run / "logs").mkdir(parents=True)
    meta = {
        "id": run_id,
        "name": run_id.split("-", 2)[-1],
        "kind": kind,
        "status": "complete",
        "created_at": created,
        "finished_at": created,
        "config": {"technique": "lora"},
    }
    (run / "run.json").write_text(json.dumps(meta))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if report is not None:
        (run / "report").mkdir()
        (run / "report" / report).write_text(REPORT)
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "20250101-120000-old", created="2025-01-01T12:00:00+00:00", metrics={"eval": {"f1": 0.25}})
    make_run(
        root,
        "20250102-120000-new",
        created="2025-01-02T12:00:00+00:00",
        report="index.html",
        metrics={"eval": {"f1": 0.5, "em": 0.4}, "note": "text is not a metric"},
    )
    ladder = root / "ladder-qa"
    (ladder / "report").mkdir(parents=True)
    (ladder / "report" / "report.html").write_text(REPORT)
    (ladder / "report" / "pareto.png").write_bytes(b"\x89PNG fake")
    (ladder / "ladder.json").write_text(
        json.dumps(
            {"status": "complete", "task": "qa", "quick": True, "rungs": [{}, {}], "recommendation": {"chosen": "rag"}}
        )
    )
    (root / ".partial-leftover").mkdir()
    (tmp_path / "secret.txt").write_text("not for the browser")
    return root


def test_listing_reads_runs_ladders_and_reports(runs: Path) -> None:
    listed = {r["id"]: r for r in list_ui_runs(runs)}
    assert set(listed) == {"20250101-120000-old", "20250102-120000-new", "ladder-qa"}  # hidden leftover skipped

    new = listed["20250102-120000-new"]
    assert new["kind"] == "sft" and new["technique"] == "lora" and new["status"] == "complete"
    assert new["metrics"] == {"eval.f1": 0.5, "eval.em": 0.4}  # only numbers, flattened
    assert new["report"] == "/ui/runs/20250102-120000-new/report/index.html"
    assert listed["20250101-120000-old"]["report"] is None

    ladder = listed["ladder-qa"]
    assert ladder["kind"] == "ladder" and ladder["status"] == "complete"
    assert ladder["metrics"] == {"task": "qa", "recommended": "rag", "rungs": 2}
    assert ladder["report"] == "/ui/runs/ladder-qa/report/report.html"  # what a ladder writes

    dated = [r["id"] for r in list_ui_runs(runs) if r["id"].startswith("2025")]
    assert dated == ["20250102-120000-new", "20250101-120000-old"]  # newest first


def test_listing_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list_ui_runs(tmp_path / "nowhere") == []


def test_report_file_serves_only_regular_files_inside_the_report(runs: Path, tmp_path: Path) -> None:
    assert report_file(runs, "ladder-qa", "report.html") == (runs / "ladder-qa/report/report.html").resolve()
    assert report_file(runs, "ladder-qa", "pareto.png") is not None
    refused = [
        ("ladder-qa", "../ladder.json"),
        ("ladder-qa", "../../../secret.txt"),
        ("ladder-qa", "/etc/passwd"),
        ("ladder-qa", str(tmp_path / "secret.txt")),
        ("ladder-qa", "..\\..\\secret.txt"),
        ("ladder-qa", "./report.html"),
        ("ladder-qa", "missing.html"),
        ("ladder-qa", ""),  # the folder itself is not a file
        ("ladder-qa", "report.html\x00.png"),
        ("..", "secret.txt"),
        ("../runs/ladder-qa", "report.html"),
        (".partial-leftover", "report.html"),
        ("nope", "report.html"),
    ]
    for run_id, path in refused:
        assert report_file(runs, run_id, path) is None, (run_id, path)


def test_symlinks_out_of_the_runs_folder_are_refused(runs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "report").mkdir(parents=True)
    (outside / "report" / "index.html").write_text("outside")
    os.symlink(tmp_path / "secret.txt", runs / "ladder-qa" / "report" / "leak.txt")  # a file link out
    os.symlink(outside, runs / "linked-run")  # a whole run folder linked out
    os.symlink(outside / "report", runs / "20250101-120000-old" / "report")  # a report folder linked out
    # A link that stays inside the report is fine: static sites use them.
    os.symlink("report.html", runs / "ladder-qa" / "report" / "alias.html")

    assert report_file(runs, "ladder-qa", "leak.txt") is None
    assert report_file(runs, "linked-run", "index.html") is None
    assert report_file(runs, "20250101-120000-old", "index.html") is None
    assert report_file(runs, "ladder-qa", "alias.html") is not None
    listed = {r["id"]: r for r in list_ui_runs(runs)}
    assert "linked-run" not in listed
    assert listed["20250101-120000-old"]["report"] is None


# --- through HTTP ----------------------------------------------------------------------------------------------
def make_app(tmp_path: Path, runs: Path, keys: KeyStore | None = None) -> Any:
    from tailorlm.serve.app import create_app

    config = ServeConfig.model_validate({"runs_dir": str(runs), "store": str(tmp_path / "fb.db")})
    return create_app(ServerState(config, served={}, store=None, keys=keys))


def raw_get(app: Any, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET straight through ASGI: an HTTP client would normalise ``..`` away before the server saw it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_traversal_attempts_over_http_get_404(runs: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    app = make_app(tmp_path, runs)
    client = TestClient(app)
    ok = client.get("/ui/runs/ladder-qa/report/report.html")
    assert ok.status_code == 200 and b"the report" in ok.content
    assert client.get("/ui/runs/ladder-qa/report", follow_redirects=False).headers["location"] == (
        "/ui/runs/ladder-qa/report/report.html"
    )
    for path in [
        "/ui/runs/ladder-qa/report/../ladder.json",
        "/ui/runs/ladder-qa/report/../../../secret.txt",
        "/ui/runs/ladder-qa/report/%2e%2e/ladder.json",
        "/ui/runs/ladder-qa/report/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/ui/runs/ladder-qa/report/..%2F..%2F..%2Fsecret.txt",
        "/ui/runs/ladder-qa/report//etc/passwd",
        "/ui/runs/%2e%2e/report/secret.txt",
        "/ui/runs/ladder-qa/report/missing.html",
    ]:
        # Both as the server sees a raw request and as a client would send it.
        assert raw_get(app, path)[0] == 404, path
        assert client.get(path).status_code == 404, path
    # ASGI servers percent-decode the path before routing: a decoded ``..`` must be refused too.
    assert raw_get(app, "/ui/runs/ladder-qa/report/../../secret.txt")[0] == 404


def test_runs_api_lists_runs_on_an_open_server(runs: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    body = TestClient(make_app(tmp_path, runs)).get("/ui/api/runs").json()
    assert body["object"] == "list" and len(body["data"]) == 3
    page = TestClient(make_app(tmp_path, runs)).get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]


def test_runs_routes_need_an_admin_key_and_the_cookie_opens_reports(runs: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    keys = KeyStore(tmp_path / "keys.json")
    user_key, _ = keys.create("alice")
    admin_key, admin_info = keys.create("root", scope="admin")
    client = TestClient(make_app(tmp_path, runs, keys))
    report = "/ui/runs/ladder-qa/report/report.html"

    assert client.get("/ui/api/runs").status_code == 401
    assert client.get("/ui/api/runs", headers={"Authorization": f"Bearer {user_key}"}).status_code == 403
    assert client.get(report).status_code == 401
    # Without a key, a missing file and a present one look the same.
    assert client.get("/ui/runs/ladder-qa/report/missing.html").status_code == 401
    assert client.get(report, headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200

    listed = client.get("/ui/api/runs", headers={"Authorization": f"Bearer {admin_key}"})
    assert listed.status_code == 200
    cookie = listed.cookies.get(COOKIE)
    assert cookie and admin_key not in cookie and admin_info.id in cookie
    set_cookie = listed.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/ui/runs/" in set_cookie

    fresh = TestClient(make_app(tmp_path, runs, keys))
    assert fresh.get(report, cookies={COOKIE: cookie}).status_code == 401  # another process: another secret
    assert client.get(report, cookies={COOKIE: cookie}).status_code == 200
    assert client.get(report, cookies={COOKIE: cookie[:-1] + ("0" if cookie[-1] != "0" else "1")}).status_code == 401

    keys.revoke(admin_info.id)  # revocation takes effect on the next request, cookie or not
    assert client.get(report, cookies={COOKIE: cookie}).status_code == 401


def test_report_pass_expires_and_rejects_forgeries() -> None:
    passes = ReportPass(secret=b"s" * 32, ttl_s=60)
    cookie = passes.issue("k_0123abcd", now=1000.0)
    assert passes.key_id(cookie, now=1030.0) == "k_0123abcd"
    assert passes.key_id(cookie, now=1061.0) is None
    key_id, expiry, signature = cookie.split(".")
    assert passes.key_id(f"{key_id}.{int(expiry) + 999}.{signature}", now=1030.0) is None
    assert passes.key_id(f"k_ffffffff.{expiry}.{signature}", now=1030.0) is None
    assert ReportPass(secret=b"t" * 32).key_id(cookie, now=1030.0) is None
    for junk in (None, "", "a.b", "a.b.c.d", "k_0123abcd.x.y"):
        assert passes.key_id(junk, now=1030.0) is None
