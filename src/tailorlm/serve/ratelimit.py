"""Per-key rate limits for `tailor serve`: requests per minute and tokens per minute, as token buckets.

A bucket of capacity ``C`` per minute holds up to ``C`` tokens and refills at ``C/60`` per second, so a client may
burst ``C`` requests and then goes on at the average rate. Requests are charged before they run (one each); tokens
are charged after the answer, when the count is known, so a long answer can push the bucket below zero and the next
request waits until it has paid that debt off.

Memory stays bounded however many distinct ids arrive (keys, or ``"ip:<addr>"`` on an open server): a bucket idle
long enough to be full again is indistinguishable from a new one and is dropped by a sweep once a minute; and past
``max_buckets`` the least recently used buckets are dropped, which can only err in the client's favour.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# A request bucket refills from empty in 60 s; sweeping once a minute finds every idle, non-indebted bucket full.
SWEEP_INTERVAL_S = 60.0


@dataclass
class _Bucket:
    capacity: float  # tokens at most (the per-minute limit)
    tokens: float  # now; may be negative after a token charge
    updated: float  # clock time of the last refill

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float, capacity: float) -> None:
        """Bring the bucket to ``now``. A changed limit (an admin edited the key) takes effect at once."""
        if capacity != self.capacity:
            self.capacity = capacity
            self.tokens = min(self.tokens, capacity)
        elapsed = max(0.0, now - self.updated)  # max: a clock that steps back must not drain the bucket
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now

    def wait(self, need: float) -> float:
        """Seconds until the bucket holds ``need`` tokens."""
        return max(0.0, (need - self.tokens) / self.rate)


class _Buckets:
    """Buckets by id in least-recently-used order; not locked itself (RateLimiter holds the lock)."""

    def __init__(self, max_buckets: int) -> None:
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def get(self, key_id: str, capacity: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(capacity, capacity, now)
            if len(self._buckets) > self.max_buckets:
                self._shrink(now)
        else:
            self._buckets.move_to_end(key_id)
            bucket.refill(now, capacity)
        return bucket

    def sweep(self, now: float) -> None:
        """Drop every bucket that is full again: forgetting it changes nothing. Walks from the least recently used
        end and stops at the first bucket touched within the last minute, since every later one is newer still."""
        full = []
        for key_id, bucket in self._buckets.items():
            if now - bucket.updated < SWEEP_INTERVAL_S:
                break
            if bucket.tokens + (now - bucket.updated) * bucket.rate >= bucket.capacity:  # indebted ones stay
                full.append(key_id)
        for key_id in full:
            del self._buckets[key_id]

    def _shrink(self, now: float) -> None:
        """Over ``max_buckets``: drop full buckets, then the least recently used, down to 3/4 of the bound so that
        the next shrink is ``max_buckets/4`` new ids away (amortized O(1) per request)."""
        self.sweep(now)
        target = self.max_buckets * 3 // 4
        while len(self._buckets) > target:
            self._buckets.popitem(last=False)


class RateLimiter:
    """Token buckets per key id for requests per minute (rpm) and tokens per minute (tpm). Thread-safe.

    ``rpm``/``tpm`` are the server defaults (None: unlimited); each call may pass the key's own limit, which wins.
    ``clock`` is monotonic seconds, injectable so tests can move time.
    """

    def __init__(
        self,
        *,
        rpm: int | None,
        tpm: int | None,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm), ("max_buckets", max_buckets)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        self.rpm, self.tpm, self._clock = rpm, tpm, clock
        self._lock = threading.Lock()
        self._requests = _Buckets(max_buckets)
        self._tokens = _Buckets(max_buckets)
        self._last_sweep = clock()

    def __len__(self) -> int:
        """Buckets held (both kinds): what the memory bound is about."""
        with self._lock:
            return len(self._requests) + len(self._tokens)

    def check_request(self, key_id: str, *, rpm: int | None = None) -> float | None:
        """Consume one request: None if allowed, else seconds until one is (the ``Retry-After``); nothing consumed."""
        limit = rpm if rpm is not None else self.rpm
        if limit is None:
            return None
        with self._lock:
            now = self._now()
            bucket = self._requests.get(key_id, float(limit), now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return bucket.wait(1.0)

    def check_tokens(self, key_id: str, *, tpm: int | None = None) -> float | None:
        """Before a request: None if the key's token bucket is positive, else seconds until it is again."""
        limit = tpm if tpm is not None else self.tpm
        if limit is None:
            return None
        with self._lock:
            bucket = self._tokens.get(key_id, float(limit), self._now())
            # Retry when a whole token is back, so the client's retry is not refused by a rounding hair.
            return None if bucket.tokens > 0.0 else bucket.wait(1.0)

    def charge_tokens(self, key_id: str, tokens: int, *, tpm: int | None = None) -> None:
        """After the answer: take the prompt + completion tokens it used. May leave the bucket negative."""
        limit = tpm if tpm is not None else self.tpm
        if limit is None or tokens <= 0:
            return
        with self._lock:
            bucket = self._tokens.get(key_id, float(limit), self._now())
            bucket.tokens -= tokens

    def _now(self) -> float:
        """The clock, and the once-a-minute sweep of full buckets (caller holds the lock)."""
        now = self._clock()
        if now - self._last_sweep >= SWEEP_INTERVAL_S:
            self._last_sweep = now
            self._requests.sweep(now)
            self._tokens.sweep(now)
        return now
