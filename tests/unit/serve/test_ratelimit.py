"""Rate limits as token buckets on a fake clock: bursts, refill, token debt, per-key overrides, bounded memory."""

from __future__ import annotations

import threading
import time

import pytest

from tailorlm.serve.ratelimit import RateLimiter

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rpm_allows_a_burst_then_asks_to_wait_about_a_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, tpm=None, clock=clock)
    assert all(limiter.check_request("k_a") is None for _ in range(60))
    retry = limiter.check_request("k_a")
    assert retry == pytest.approx(1.0)
    assert limiter.check_request("k_a") == pytest.approx(1.0)  # a refused request consumes nothing
    assert limiter.check_request("k_b") is None  # buckets are per key


def test_refill_over_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, tpm=None, clock=clock)
    for _ in range(60):
        limiter.check_request("k")
    clock.now += 0.5
    assert limiter.check_request("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.check_request("k") is None
    clock.now += 3600  # refills to the burst size, not beyond
    assert sum(limiter.check_request("k") is None for _ in range(100)) == 60


def test_token_charges_can_go_into_debt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, tpm=600, clock=clock)  # 10 tokens/s
    assert limiter.check_tokens("k") is None
    limiter.charge_tokens("k", 500)
    assert limiter.check_tokens("k") is None  # 100 left
    limiter.charge_tokens("k", 300)  # −200: the next request waits ~20 s
    assert limiter.check_tokens("k") == pytest.approx(20.1)
    clock.now += 20.0
    assert limiter.check_tokens("k") is not None  # exactly 0 is not positive
    clock.now += 0.2
    assert limiter.check_tokens("k") is None
    assert limiter.check_request("k") is None  # rpm=None: unlimited


def test_per_key_override_beats_the_default() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=2, tpm=100, clock=clock)
    assert sum(limiter.check_request("small") is None for _ in range(10)) == 2
    assert sum(limiter.check_request("big", rpm=5) is None for _ in range(10)) == 5
    limiter.charge_tokens("big", 150, tpm=1000)
    assert limiter.check_tokens("big", tpm=1000) is None
    limiter.charge_tokens("small", 150)
    assert limiter.check_tokens("small") is not None


def test_unlimited_keeps_no_state() -> None:
    limiter = RateLimiter(rpm=None, tpm=None)
    for i in range(100):
        assert limiter.check_request(f"k{i}") is None
        limiter.charge_tokens(f"k{i}", 10**6)
        assert limiter.check_tokens(f"k{i}") is None
    assert len(limiter) == 0


def test_memory_stays_bounded_with_100k_ids() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, tpm=1000, clock=clock, max_buckets=10_000)
    t0 = time.perf_counter()
    for i in range(100_000):
        limiter.check_request(f"ip:10.0.{i // 256}.{i % 256}")
        limiter.charge_tokens(f"ip:10.0.{i // 256}.{i % 256}", 1)
        if i % 1000 == 0:
            clock.now += 0.01
        assert len(limiter) <= 20_000
    assert time.perf_counter() - t0 < 10  # amortized O(1) per request, not a scan each time
    # A minute later every idle bucket is full again, and the next request sweeps them all away.
    clock.now += 61
    limiter.check_request("k_new")
    assert len(limiter) == 1


def test_sweep_keeps_buckets_in_debt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, tpm=60, clock=clock)
    limiter.charge_tokens("hog", 10_000)
    limiter.charge_tokens("light", 1)
    clock.now += 120
    limiter.check_tokens("other")
    assert limiter.check_tokens("hog") is not None  # its debt survived the sweep
    assert len(limiter) == 2  # "light" was full again and forgotten


def test_thread_safe_counting() -> None:
    limiter = RateLimiter(rpm=1000, tpm=None, clock=lambda: 0.0)
    allowed: list[bool] = []

    def hammer() -> None:
        allowed.extend(limiter.check_request("k") is None for _ in range(500))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 1000


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rpm=0, tpm=None)
