"""The web UI: static files under ``serve/ui/`` (plain HTML, CSS and one ES module; no Node build step, nothing
fetched from a CDN), served by the same app, plus two read-only routes for the Runs page.

    GET /                                   the chat page (serve/ui/index.html)
    GET /ui/{file}                          its script and style sheet
    GET /ui/api/runs                        the runs under ``config.runs_dir``, newest first (JSON)
    GET /ui/runs/{run_id}/report/{path}     a file of a run's ``report/`` folder (a ladder report, its charts)

The chat itself talks to the public API (``/v1/models``, ``/v1/chat/completions``, ``/v1/feedback``) like any
other client, so the UI needs no route of its own for it and is authorised exactly as the API is.

The two runs routes show what is on the server's disk, so on a server with API keys they need an *admin* key. A
plain browser navigation to a report cannot send an ``Authorization`` header, and a ``?key=`` query parameter
would put the admin key in the browser history, in a proxy's access log and in the ``Referer`` of every link
the report holds. So ``GET /ui/api/runs``, called by the page with the header, also sets a short-lived cookie:
HMAC-signed with a secret that lives only in this process, naming the key id and an expiry, ``HttpOnly`` (page
scripts cannot read it), ``SameSite=Strict`` (another site cannot make the browser send it) and scoped to
``/ui/runs/``. The report route accepts that cookie, and re-checks on every request that the key is still an
active admin key, so ``tailor keys revoke`` takes effect at once. Behind a load balancer each replica has its own
secret: a report opened on another replica answers 401 until the Runs page is loaded there again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from tailorlm.core.run import read_run
from tailorlm.serve.auth import bearer_token
from tailorlm.serve.state import ApiError

UI_DIR = Path(__file__).parent / "ui"
COOKIE = "tailor_ui_runs"
COOKIE_PATH = "/ui/runs/"
COOKIE_TTL_S = 3600
# Which file of report/ a run's "open report" link points at: a ladder writes report.html; index.html first, so a
# report folder that has one (any static site) opens at its front page.
REPORT_PAGES = ("index.html", "report.html")
# Run ids are what Run.create makes (time stamp + slug, [A-Za-z0-9._-]); anything else is refused before any
# filesystem call. A leading dot is refused too: hidden entries are atomic-write leftovers, not runs.
_RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
# The page runs its one module script and style sheet and talks only to this origin; answers are model output
# (untrusted) and are inserted as text, and this policy is the second line of defence behind that.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


# -- the runs listing ---------------------------------------------------------------------------------------------
def report_page(run_dir: Path) -> str | None:
    """The page a run's report opens at (relative to ``report/``), or None when it has no report."""
    if not _inside(run_dir / "report", run_dir.parent):  # a report/ symlinked out of the runs folder
        return None
    for name in REPORT_PAGES:
        page = run_dir / "report" / name
        if page.is_file() and _inside(page, run_dir / "report"):
            return name
    return None


def _numbers(metrics: dict[str, Any], limit: int = 4) -> dict[str, float]:
    """The first few numeric metrics: a one-line summary, not the whole table (``tailor runs show`` has that)."""
    out = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return dict(list(out.items())[:limit])


def _ladder_entry(run_dir: Path) -> dict[str, Any]:
    """A ladder folder (``ladder.json``, no ``run.json``): its task, status and recommended rung."""
    try:
        data = json.loads((run_dir / "ladder.json").read_text(encoding="utf-8"))
        created = (run_dir / "ladder.json").stat().st_mtime
    except (OSError, ValueError):
        data, created = None, None
    if not isinstance(data, dict):
        return {"kind": "ladder", "status": "corrupt", "created_at": None, "metrics": {}}
    rec = data.get("recommendation") if isinstance(data.get("recommendation"), dict) else {}
    summary = {"task": data.get("task"), "recommended": rec.get("chosen"), "rungs": len(data.get("rungs") or [])}
    return {
        "kind": "ladder",
        "technique": "quick" if data.get("quick") else None,
        "status": str(data.get("status") or "unknown"),
        # ladder.json is rewritten when the ladder ends: its time is when the report was written.
        "created_at": _iso(created),
        "metrics": {k: v for k, v in summary.items() if v is not None},
    }


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat() if timestamp is not None else None


def _technique(meta: dict[str, Any]) -> str | None:
    """The technique a run recorded in its config snapshot (``technique:``, or a recipe's ``method:``), if any."""
    config = meta.get("config")
    if not isinstance(config, dict):
        return None
    for key in ("technique", "method", "recipe"):
        if isinstance(config.get(key), str):
            return str(config[key])
    return None


def list_ui_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every run folder directly under ``runs_dir``, newest first, as the Runs page shows it.

    A run (``run.json``, read by ``core.run.read_run``), a ladder (``ladder.json``) or any other folder (listed
    with status "unknown", so a folder that holds a report is still reachable). ``id`` is the folder name: the
    report URL is built from it, never from what a possibly edited ``run.json`` says.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    entries: list[dict[str, Any]] = []
    for run_dir in root.iterdir():
        if not _RUN_ID.fullmatch(run_dir.name) or not run_dir.is_dir() or not _inside(run_dir, root):
            continue
        entry: dict[str, Any] = {"id": run_dir.name}
        if (run_dir / "run.json").is_file():
            info = read_run(run_dir)
            entry |= {
                "name": info.name,
                "kind": info.kind,
                "technique": _technique(info.meta),
                "status": info.status,
                "created_at": info.created_at.isoformat() if info.created_at else None,
                "metrics": _numbers(info.metrics),
            }
        elif (run_dir / "ladder.json").is_file():
            entry |= _ladder_entry(run_dir)
        else:
            entry |= {"kind": None, "status": "unknown", "created_at": _iso(run_dir.stat().st_mtime), "metrics": {}}
        page = report_page(run_dir)
        entry["report"] = f"/ui/runs/{run_dir.name}/report/{page}" if page else None
        entries.append(entry)
    # Runs without a time go last; ties by id (run ids start with their creation time).
    return sorted(entries, key=lambda e: (_timestamp(e.get("created_at")), e["id"]), reverse=True)


def _timestamp(iso: str | None) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else 0.0
    except ValueError:
        return 0.0


# -- path safety --------------------------------------------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    """``path`` resolves (symlinks followed) to ``folder`` or below it."""
    try:
        return path.resolve(strict=True).is_relative_to(folder.resolve(strict=True))
    except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
        return False


def report_file(runs_dir: str | Path, run_id: str, path: str) -> Path | None:
    """The file ``runs_dir/run_id/report/path`` if it is a regular file truly inside that report folder, else None.

    The URL path arrives percent-decoded, so ``%2e%2e`` is already ``..`` here. Refused before touching the disk:
    a run id that is not a plain name, an absolute path, a backslash or NUL, and ``.``, ``..``, empty and hidden
    parts. Then the resolved path (symlinks followed) must lie inside the resolved report folder, which must lie
    inside the resolved runs folder: a symlink that leads out of either is refused like a missing file.
    """
    if not _RUN_ID.fullmatch(run_id):
        return None
    if path.startswith("/") or "\\" in path or "\x00" in path:
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    root = Path(runs_dir)
    report_dir = root / run_id / "report"
    target = report_dir.joinpath(*parts)
    if not (_inside(report_dir, root) and _inside(target, report_dir)):
        return None
    resolved = target.resolve()
    return resolved if resolved.is_file() else None


# -- the report cookie --------------------------------------------------------------------------------------------
class ReportPass:
    """Signs and checks the short-lived cookie that lets a browser navigation open a report (module docstring)."""

    def __init__(self, secret: bytes | None = None, ttl_s: float = COOKIE_TTL_S) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def _sign(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, key_id: str, now: float | None = None) -> str:
        payload = f"{key_id}.{int((now or time.time()) + self.ttl_s)}"
        return f"{payload}.{self._sign(payload)}"

    def key_id(self, cookie: str | None, now: float | None = None) -> str | None:
        """The key id a valid, unexpired cookie names; None for anything else."""
        if not cookie or cookie.count(".") != 2:
            return None
        key_id, expiry, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{key_id}.{expiry}")):
            return None
        if not expiry.isdigit() or int(expiry) < (now or time.time()):
            return None
        return key_id


# -- routes -------------------------------------------------------------------------------------------------------
def mount_ui(app: Any, state: Any) -> None:
    """Add the UI's routes to ``app`` (a FastAPI app); ``state`` is the ServerState (config, keys, authenticate)."""
    passes = ReportPass()
    runs_dir = Path(state.config.runs_dir)

    def client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def admin(request: Request) -> Any:
        return state.authenticate(bearer_token(request.headers.get("authorization")), client(request), admin=True)

    def admin_or_pass(request: Request) -> None:
        """The report route: an admin key in the header, or a valid cookie for a key that is still an active admin."""
        if state.open or request.headers.get("authorization"):
            admin(request)
            return
        key_id = passes.key_id(request.cookies.get(COOKIE))
        if key_id is not None and state.keys is not None:
            state.keys.reload_if_changed()
            if any(k.id == key_id and k.active and k.scope == "admin" for k in state.keys.list()):
                return
        raise ApiError(
            401,
            "reports need an admin key: open them from the Runs page of the UI after saving an admin API key",
            type="authentication_error",
            code="invalid_api_key",
        )

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        # no-cache: the page is tiny and must match the app.js of the server that is running now.
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return FileResponse(UI_DIR / "index.html", headers=headers)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for it on every page they open (reports too): an empty answer, not a 404 in every log.
        return Response(status_code=204)

    @app.get("/ui/api/runs", include_in_schema=False)
    async def runs(request: Request) -> Response:
        key = admin(request)
        data = await run_in_threadpool(list_ui_runs, runs_dir)
        response = JSONResponse({"object": "list", "runs_dir": str(runs_dir), "data": data})
        if key is not None:
            response.set_cookie(
                COOKIE,
                passes.issue(key.id),
                max_age=int(passes.ttl_s),
                path=COOKIE_PATH,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    def not_found() -> ApiError:
        return ApiError(404, "no such report file", type="not_found_error", code="not_found")

    @app.get("/ui/runs/{run_id}/report/{path:path}", include_in_schema=False)
    async def report(run_id: str, path: str, request: Request) -> Any:
        admin_or_pass(request)  # before the lookup: without a key, a missing and an existing report look the same
        if path == "":
            return await report_root(run_id, request)
        found = await run_in_threadpool(report_file, runs_dir, run_id, path)
        if found is None:
            raise not_found()
        return FileResponse(found, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @app.get("/ui/runs/{run_id}/report", include_in_schema=False)
    async def report_root(run_id: str, request: Request) -> Any:
        # A redirect to the page itself rather than serving it here, so the report's relative links (its charts)
        # resolve inside report/.
        admin_or_pass(request)
        page = await run_in_threadpool(report_page, runs_dir / run_id) if _RUN_ID.fullmatch(run_id) else None
        if page is None:
            raise not_found()
        return RedirectResponse(f"/ui/runs/{run_id}/report/{page}", status_code=307)

    # Mounted after the routes above: a mount at /ui would otherwise answer for /ui/api/... and /ui/runs/... too.
    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
