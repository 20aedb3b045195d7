"""Start a real `tailor serve` for tests: in this process (a uvicorn thread on a free port) or as a subprocess
(for signals: SIGTERM drains, SIGKILL loses nothing that was acknowledged)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base} did not become ready")


@contextmanager
def serving(state: Any) -> Iterator[str]:
    """Serve ``state`` (a ServerState) on a free port in a thread; yields the base URL (no /v1)."""
    import uvicorn

    from tailorlm.serve.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 30)
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def make_state(systems: list[Any], tmp: Path, **config: Any) -> Any:
    """A ServerState for ``systems`` with a SQLite store and keys file under ``tmp``."""
    from tailorlm.serve.config import ServeConfig
    from tailorlm.serve.server import build_state

    cfg = ServeConfig.model_validate(
        {"store": str(tmp / "feedback.db"), "keys_file": str(tmp / "keys.json"), **config}
    )
    return build_state(cfg, systems=systems)


@contextmanager
def serve_process(args: list[str], tmp: Path, *, env: dict[str, str] | None = None) -> Iterator[tuple[str, Any]]:
    """`tailor serve ARGS --port P` as a subprocess; yields (base URL, Popen). Its logs go to tmp/serve.log."""
    port = free_port()
    log = open(tmp / "serve.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "tailorlm.cli.main", "serve", *args, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 180, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        log.close()
