"""Batched streaming: several independent requests ("rows") generated together, each streamed on its own.

The server (``serve/scheduler.py``) gathers concurrent requests into one batch and hands it to an engine's
``run_rows``. Every row keeps its own prompt, token budget, stop strings and cancellation, and receives its text as
it is generated; the engine only promises that rows in one call share the sampling settings (temperature, top_p,
seed), which the scheduler guarantees by grouping.

``RowText`` is the one place that turns token ids into safe text deltas: it stops at an end token, at a stop string
(held back until it cannot be the start of one), at the row's token budget, and never emits half a UTF-8 character.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tailorlm.models.engines.base import FinishReason, GenerationParams, StreamChunk, Usage, truncate_at_stop


class RowText:
    """Incremental detokenization of one row with stop strings, end tokens and a token budget."""

    def __init__(self, tokenizer: Any, *, stop: Sequence[str], eos: set[int], max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.eos = eos
        self.max_tokens = max_tokens
        self.holdback = max((len(s) for s in self.stop), default=0)
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.finish_reason: FinishReason | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def push(self, token_id: int) -> str:
        """Take one generated token; return the text that is now safe to send (maybe empty)."""
        if self.done:
            return ""
        self.ids.append(token_id)
        if token_id in self.eos:
            self.finish_reason = "stop"
            return self._flush()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut, stopped = truncate_at_stop(text, self.stop)
        if stopped:
            self.text, self.finish_reason = cut, "stop"
            return self._flush()
        self.text = text
        if len(self.ids) >= self.max_tokens:
            self.finish_reason = "length"
            return self._flush()
        # A token that ends mid-character decodes to U+FFFD until the next one completes it: wait for it.
        safe = len(text) - self.holdback - (1 if text.endswith("\ufffd") else 0)
        if safe > self.sent:
            delta, self.sent = text[self.sent : safe], safe
            return delta
        return ""

    def end(self) -> str:
        """The engine stopped producing tokens for this row (its budget or the batch's): flush what is left."""
        if self.finish_reason is None:
            self.finish_reason = "length"
        return self._flush()

    def _flush(self) -> str:
        delta = self.text[self.sent :] if len(self.text) > self.sent else ""
        self.sent = max(self.sent, len(self.text))
        return delta


@dataclass
class Row:
    """One request in a batch: its prompt ids, settings, a sink for its chunks, and a cancellation flag.

    ``sink`` is called from the engine's thread; the server's sink hands each chunk to the asyncio loop. The last
    chunk a row receives carries ``finish_reason`` and ``usage`` (or ``error`` is set and the sink gets None).
    """

    prompt_ids: list[int]
    params: GenerationParams
    sink: Callable[[StreamChunk | None], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    adapter: str | None = None  # the PEFT adapter this row runs with (shared-weight Systems), None = the base
    enqueued: float = field(default_factory=time.perf_counter)
    error: BaseException | None = None
    text: RowText | None = None
    finished: bool = False

    def start(self, tokenizer: Any, eos: set[int]) -> RowText:
        self.text = RowText(tokenizer, stop=self.params.stop, eos=eos, max_tokens=self.params.max_new_tokens)
        return self.text

    def emit(self, delta: str) -> None:
        if delta:
            self.sink(StreamChunk(text=delta))

    def finish(self) -> None:
        """Send the row's final chunk (remaining text, finish reason, usage), once: engines call it as soon as the
        row is done, so its client need not wait for the longest row of the batch, and again after the batch."""
        assert self.text is not None
        if self.finished:
            return
        self.finished = True
        rest = self.text.end()
        usage = Usage(prompt_tokens=len(self.prompt_ids), completion_tokens=len(self.text.ids))
        self.sink(StreamChunk(text=rest, finish_reason=self.text.finish_reason, usage=usage))

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.sink(None)


def sampling_key(params: GenerationParams) -> tuple[Any, ...]:
    """Rows with equal keys may share a batch: engines apply one sampling setting (and seed) per call."""
    if params.greedy:
        return ("greedy",)
    return ("sample", params.temperature, params.top_p, params.seed)
