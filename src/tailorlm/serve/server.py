"""Start the server: load the Systems, open the store and the keys, refuse unsafe settings, run uvicorn, and drain
on SIGTERM (in-flight requests finish, new ones get 503, then the process exits).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tailorlm.core.system import System
from tailorlm.errors import ConfigError
from tailorlm.serve.config import ServeConfig
from tailorlm.serve.state import ServerState, is_loopback

log = logging.getLogger("tailorlm.serve")
DRAIN_TIMEOUT_S = 60.0


def load_system(spec: str) -> System:
    """A system.yaml, a folder holding one, or ``default`` (the packaged default model, no prompt program)."""
    if spec == "default" and not Path(spec).exists():
        return System(name="default")
    return System.load(spec)


def build_state(config: ServeConfig, *, systems: list[System] | None = None) -> ServerState:
    """Everything the app needs, loaded once. ``systems`` defaults to loading ``config.systems``."""
    from tailorlm.serve.auth import KeyStore, default_keys_path
    from tailorlm.serve.registry import load_served
    from tailorlm.serve.store import open_store

    keys = KeyStore(Path(config.keys_file) if config.keys_file else default_keys_path())
    if keys.empty and not is_loopback(config.host) and not config.allow_open:
        raise ConfigError(
            f"refusing to serve without API keys on {config.host}: anyone who reaches it could use it",
            hint="create a key with `tailor keys create NAME`, bind to 127.0.0.1, or set allow_open: true",
        )
    if systems is None:
        if not config.systems:
            raise ConfigError(
                "no System to serve", hint="tailor serve runs/<ladder>/best  (or systems: in serve.yaml)"
            )
        systems = [load_system(s) for s in config.systems]
    from tailorlm.serve.metrics import Metrics

    metrics = Metrics()
    served = load_served(
        systems,
        share_weights=config.share_weights,
        max_batch=config.batching.max_batch,
        window_ms=config.batching.window_ms,
        max_queue=config.batching.max_queue,
        on_batch=lambda rows, seconds: metrics.batch_rows.observe(rows),
    )
    store = open_store(config.store)
    return ServerState(config, served, store, keys, metrics)


def run(state: ServerState, *, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; SIGTERM drains first."""
    import uvicorn

    from tailorlm.serve.app import create_app
    from tailorlm.serve.logs import setup_logging

    setup_logging(log_level)
    config = state.config
    server = _DrainingServer(
        uvicorn.Config(
            create_app(state),
            host=config.host,
            port=config.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(DRAIN_TIMEOUT_S),
            timeout_keep_alive=5,
        ),
        state,
    )
    log.info(
        "serving",
        extra={
            "fields": {"host": config.host, "port": config.port, "models": state.model_names(), "open": state.open}
        },
    )
    try:
        server.run()
    finally:
        for scheduler in state.schedulers():
            scheduler.close()
        state.store.close()


class _DrainingServer:
    """uvicorn's Server, with SIGTERM first draining: /ready turns 503, new requests get 503, in-flight ones finish."""

    def __init__(self, config: Any, state: ServerState) -> None:
        import uvicorn

        state_ref = state

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                if sig == signal.SIGTERM and not state_ref.draining:
                    state_ref.draining = True
                    log.info("draining", extra={"fields": {"inflight": state_ref.inflight}})
                    threading.Thread(target=self._drain, daemon=True).start()
                    return
                super().handle_exit(sig, frame)

            def _drain(self) -> None:
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while state_ref.inflight > 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.should_exit = True

        self.server = Server(config)

    def run(self) -> None:
        self.server.run()
