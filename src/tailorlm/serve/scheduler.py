"""The batching scheduler: concurrent requests to one loaded model are generated together.

Neither CPU engine lets a request join a batch that is already decoding (CTranslate2's ``generate_batch`` is
static, and transformers' continuous batching measured slower than a static batch on this CPU: docs/serving.md).
So the scheduler uses a short **batching window**: the worker takes the first waiting row, waits up to
``window_ms`` for more (or until ``max_batch`` are waiting), groups the rows the engine can run together, and runs
the groups. Rows that arrive meanwhile wait for the next round.

The queue is bounded: ``submit`` raises ``QueueFull`` rather than letting latency grow without limit, and the app
answers 429 with ``Retry-After``. Cancelled rows (client gone, timeout) are dropped before they start and stop at
the next token while they run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from tailorlm.models.engines.rows import Row, sampling_key

log = logging.getLogger("tailorlm.serve")


class QueueFull(Exception):
    """The scheduler holds ``max_queue`` waiting rows already."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the server is busy")
        self.retry_after_s = retry_after_s


def default_groups(rows: Sequence[Row], max_batch: int) -> list[list[int]]:
    """Rows of similar prompt length in batches of ``max_batch``, longest first (least padding)."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].prompt_ids))
    return [order[i : i + max_batch] for i in range(0, len(order), max_batch)]


def ct2_groups(rows: Sequence[Row], max_batch: int) -> list[list[int]]:
    """CTranslate2 feeds the part of a longer prompt beyond the shortest one token per step: batch only rows whose
    lengths differ by at most half their answer budget (ct2.py explains and measures it)."""
    from tailorlm.models.engines.ct2 import LENGTH_SLACK, length_groups

    budget = min(row.params.max_new_tokens for row in rows)
    return length_groups([len(r.prompt_ids) for r in rows], max_batch, max(LENGTH_SLACK, budget // 2))


class Scheduler:
    """One worker thread in front of one engine (``engine.run_rows``)."""

    def __init__(
        self,
        engine: Any,
        *,
        name: str,
        max_batch: int = 16,
        window_ms: float = 15.0,
        max_queue: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.max_batch = max_batch
        self.window_s = window_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch  # (rows, seconds): for the batch-size metric
        self.group = ct2_groups if type(engine).__name__ == "CT2Engine" else default_groups
        self._waiting: deque[Row] = deque()
        self._cond = threading.Condition()
        self._running = 0
        self._stop = False
        self._recent_s = 1.0  # a moving estimate of one round's duration, for Retry-After
        self._thread = threading.Thread(target=self._loop, name=f"tailor-scheduler-{name}", daemon=True)
        self._thread.start()

    # -- the app's side ------------------------------------------------------------------------------------------
    def submit(self, rows: Sequence[Row]) -> None:
        """Queue ``rows`` (one request's ``n`` completions) together, or raise ``QueueFull``."""
        with self._cond:
            if len(self._waiting) + len(rows) > self.max_queue:
                raise QueueFull(retry_after_s=max(1.0, self._recent_s))
            self._waiting.extend(rows)
            self._cond.notify()

    @property
    def depth(self) -> int:
        """Rows waiting, not yet started."""
        return len(self._waiting)

    @property
    def busy(self) -> int:
        """Rows being generated now."""
        return self._running

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the worker ----------------------------------------------------------------------------------------------
    def _take(self) -> list[Row]:
        """One batch: block for the first row, gather for up to the window, then keep the group that holds the
        oldest waiting row; the other rows go back to the front of the queue, in their order.

        Only one group runs per round, so a request that arrives while a round runs waits for at most that round,
        not for every group formed from a long queue (RAG prompts of mixed length on CTranslate2 form many).
        """
        with self._cond:
            while not self._waiting and not self._stop:
                self._cond.wait(0.5)
            if self._stop:
                return []
            deadline = time.monotonic() + self.window_s
            while len(self._waiting) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            waiting = list(self._waiting)
            self._waiting.clear()
            live = []
            for row in waiting:
                if row.cancelled.is_set():
                    row.fail(TimeoutError("cancelled before it started"))
                else:
                    live.append(row)
            if not live:
                return []
            oldest = live[0]
            same = [r for r in live if sampling_key(r.params) == sampling_key(oldest.params)]
            chosen = next(group for group in self.group(same, self.max_batch) if same.index(oldest) in group)
            batch = [same[i] for i in sorted(chosen)]
            taken = {id(r) for r in batch}
            self._waiting.extendleft(reversed([r for r in live if id(r) not in taken]))
        return batch

    def _loop(self) -> None:
        while not self._stop:
            rows = self._take()
            if rows:
                self._run(rows)

    def _run(self, rows: list[Row]) -> None:
        self._running = len(rows)
        start = time.perf_counter()
        try:
            self.engine.run_rows(rows)
        except Exception as err:  # one bad batch fails its rows, never the worker
            log.exception("generation failed for a batch of %d on %s", len(rows), self.name)
            for row in rows:
                row.fail(err)
        finally:
            self._running = 0
        seconds = time.perf_counter() - start
        self._recent_s = 0.8 * self._recent_s + 0.2 * seconds
        if self.on_batch is not None:
            self.on_batch(len(rows), seconds)
