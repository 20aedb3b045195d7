"""Prometheus metrics (prometheus-client), one registry per app so that tests can build many apps in one process.

Labels: ``model`` is what the client asked for (a System or an experiment), ``system`` the System that answered,
``arm`` the experiment arm ("" outside experiments). Latency buckets span a cache hit to a long CPU answer.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
_LABELS = ("model", "system", "arm")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tailor_requests", "Requests answered, by status code.", (*_LABELS, "endpoint", "status"), registry=r
        )
        self.errors = Counter("tailor_errors", "Requests that ended in an error, by type.", ("type",), registry=r)
        self.latency = Histogram(
            "tailor_request_seconds", "Time from request to last byte.", _LABELS, buckets=_LATENCY, registry=r
        )
        self.ttft = Histogram(
            "tailor_time_to_first_token_seconds",
            "Time to the first generated text.",
            _LABELS,
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens = Counter("tailor_tokens", "Tokens processed.", (*_LABELS, "kind"), registry=r)
        self.tokens_per_s = Histogram(
            "tailor_request_tokens_per_second",
            "Completion tokens per second of one request.",
            _LABELS,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.batch_rows = Histogram(
            "tailor_batch_rows",
            "Rows generated together in one engine call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.feedback = Counter("tailor_feedback", "Feedback records stored, by kind.", ("kind",), registry=r)
        self.inflight = Gauge("tailor_requests_in_flight", "Requests being answered now.", registry=r)

    def track_queues(self, depth: Callable[[], dict[str, int]]) -> None:
        """Expose each scheduler's waiting rows as ``tailor_queue_depth{scheduler}``, read when scraped."""
        gauge = Gauge("tailor_queue_depth", "Rows waiting for a batch.", ("scheduler",), registry=self.registry)
        self._queue_gauge, self._queue_depth = gauge, depth

    def refresh(self) -> None:
        if hasattr(self, "_queue_depth"):
            for name, n in self._queue_depth().items():
                self._queue_gauge.labels(scheduler=name).set(n)
