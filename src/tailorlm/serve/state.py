"""What one running server holds, and the decisions made before any generation: who is asking (API key), whether
they may (scope, rate limit), and which System answers (a System by name, or an experiment's arm).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from tailorlm.errors import ConfigError
from tailorlm.serve.ab import Experiment, assign_arm
from tailorlm.serve.auth import KeyInfo, KeyStore
from tailorlm.serve.config import ServeConfig
from tailorlm.serve.metrics import Metrics
from tailorlm.serve.ratelimit import RateLimiter
from tailorlm.serve.registry import Served

# How long an experiment's promotion (written by `tailor ab promote` from another process) may go unseen.
PROMOTION_TTL_S = 2.0


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Route:
    """Which System answers a request, and as what (an experiment arm, plus shadow Systems)."""

    model: str
    served: Served
    experiment: str | None = None
    arm: str | None = None
    shadows: list[Served] = field(default_factory=list)


@dataclass
class Caller:
    key: KeyInfo | None  # None on an open server
    user: str | None  # the request's OpenAI `user` field
    client: str  # the client's address
    limit_id: str  # what rate limits count against

    @property
    def sticky(self) -> str:
        """The A/B sticky id for ``sticky: user``: the request's `user`, else the key id, else the address."""
        return self.user or (self.key.id if self.key else self.client)

    def sticky_for(self, experiment: Experiment) -> str:
        if experiment.sticky == "key":
            return self.key.id if self.key else self.client
        return self.sticky


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerState:
    def __init__(
        self,
        config: ServeConfig,
        served: dict[str, Served],
        store: Any,
        keys: KeyStore | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.served = served
        self.store = store
        self.keys = keys
        self.metrics = metrics or Metrics()
        self.limiter = RateLimiter(rpm=config.rate_limit.rpm, tpm=config.rate_limit.tpm)
        self.experiments: dict[str, Experiment] = {e.name: e for e in config.experiments}
        # Decided once: a key file emptied (or deleted) while serving refuses every key, it never opens the server.
        self._open = keys is None or keys.empty
        self.draining = False
        self.inflight = 0
        self.started = time.time()
        self._promoted: dict[str, tuple[float, str | None]] = {}
        self._check()
        schedulers = {id(s.scheduler): s.scheduler for s in served.values()}
        self.metrics.track_queues(lambda: {s.name: s.depth for s in schedulers.values()})

    def _check(self) -> None:
        for e in self.experiments.values():
            if e.name in self.served:
                raise ConfigError(f"experiment {e.name!r} has the name of a served System", hint="rename one")
            for arm, spec in e.arms.items():
                if spec.system not in self.served:
                    raise ConfigError(
                        f"experiment {e.name!r} arm {arm!r} names System {spec.system!r}, which is not served",
                        hint=f"served: {', '.join(sorted(self.served))}",
                    )
            for name in e.shadow:
                if name not in self.served:
                    raise ConfigError(f"experiment {e.name!r} shadows {name!r}, which is not served")

    @property
    def open(self) -> bool:
        """No API keys: anyone who can reach the port may call (only allowed on loopback, or with allow_open)."""
        return self._open

    def schedulers(self) -> list[Any]:
        return list({id(s.scheduler): s.scheduler for s in self.served.values()}.values())

    # -- who is asking ------------------------------------------------------------------------------------------
    def authenticate(self, token: str | None, client: str, *, admin: bool = False) -> KeyInfo | None:
        if self.keys is not None:
            self.keys.reload_if_changed()
        if self.open:
            return None
        info = self.keys.verify(token) if (self.keys is not None and token) else None
        if info is None:
            raise ApiError(
                401,
                "Incorrect or missing API key: send Authorization: Bearer <key>",
                type="authentication_error",
                code="invalid_api_key",
            )
        if admin and info.scope != "admin":
            raise ApiError(403, "this endpoint needs an admin key", type="permission_error", code="forbidden")
        return info

    def caller(self, key: KeyInfo | None, client: str, user: str | None) -> Caller:
        return Caller(key=key, user=user, client=client, limit_id=key.id if key else f"ip:{client}")

    def check_rate(self, caller: Caller) -> None:
        rpm = caller.key.rate_limit_rpm if caller.key else None
        tpm = caller.key.token_limit_tpm if caller.key else None
        wait = self.limiter.check_request(caller.limit_id, rpm=rpm) or self.limiter.check_tokens(
            caller.limit_id, tpm=tpm
        )
        if wait:
            raise ApiError(
                429,
                f"rate limit reached: retry in {wait:.1f} s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, round(wait)))},
            )

    def charge(self, caller: Caller, tokens: int) -> None:
        tpm = caller.key.token_limit_tpm if caller.key else None
        self.limiter.charge_tokens(caller.limit_id, tokens, tpm=tpm)

    # -- which System answers -----------------------------------------------------------------------------------
    def route(self, model: str, caller: Caller) -> Route:
        if model in self.served:
            return Route(model, self.served[model])
        experiment = self.experiments.get(model)
        if experiment is None:
            raise ApiError(
                404,
                f"The model {model!r} does not exist: this server has {', '.join(self.model_names())}",
                code="model_not_found",
                param="model",
            )
        shadows = [self.served[name] for name in experiment.shadow]
        if (winner := self.promoted(model)) is not None and winner in self.served:
            return Route(model, self.served[winner], experiment=model, arm=experiment.arm_of(winner), shadows=[])
        arm = assign_arm(experiment, caller.sticky_for(experiment))
        return Route(model, self.served[experiment.arms[arm].system], experiment=model, arm=arm, shadows=shadows)

    def promoted(self, experiment: str) -> str | None:
        """The promoted System (cached for PROMOTION_TTL_S: `tailor ab promote` runs in another process)."""
        now = time.monotonic()
        cached = self._promoted.get(experiment)
        if cached is None or now - cached[0] > PROMOTION_TTL_S:
            cached = (now, self.store.promoted(experiment))
            self._promoted[experiment] = cached
        return cached[1]

    def model_names(self) -> list[str]:
        return [*self.served, *self.experiments]
