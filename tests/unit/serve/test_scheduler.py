"""The batching scheduler's rules (one group per round, the oldest row's group first, a bounded queue) and the
row text stream (stop strings held back, budgets, end tokens), with a recording stand-in for the engine."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tailorlm.models.engines.base import GenerationParams, StreamChunk
from tailorlm.models.engines.rows import Row, RowText, sampling_key
from tailorlm.serve.scheduler import QueueFull, Scheduler, ct2_groups

pytestmark = pytest.mark.unit


class _Recorder:
    """Runs nothing: records each batch's prompt lengths, and finishes every row at once."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.hold = hold
        self.tokenizer = _CharTokenizer()

    def run_rows(self, rows: Any) -> None:
        if self.hold is not None:
            self.hold.wait(5)
        self.batches.append([len(r.prompt_ids) for r in rows])
        for row in rows:
            row.start(self.tokenizer, set())
            row.finish()


class _CharTokenizer:
    """One token per character: id = ord(c)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)


def _row(length: int, done: list[StreamChunk | None], **params: Any) -> Row:
    return Row([1] * length, GenerationParams(max_new_tokens=8, **params), done.append)


def test_one_group_per_round_oldest_first() -> None:
    hold = threading.Event()
    engine = _Recorder(hold)
    scheduler = Scheduler(engine, name="t", max_batch=2, window_ms=0, max_queue=32)
    done: list[StreamChunk | None] = []
    scheduler.submit([_row(100, done)])  # runs first, alone, while the engine is held
    time.sleep(0.1)
    # Then lengths 10 (the oldest), 300, 11, 12. The default grouping (longest first, max_batch 2) forms
    # [300, 12] and [11, 10]; the group holding the oldest row runs first.
    scheduler.submit([_row(10, done)])
    scheduler.submit([_row(300, done)])
    scheduler.submit([_row(11, done)])
    scheduler.submit([_row(12, done)])
    hold.set()
    deadline = time.monotonic() + 5
    while len(done) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.close()
    assert engine.batches[0] == [100]
    assert sorted(engine.batches[1]) == [10, 11]  # the group holding the oldest waiting row (10) runs next
    assert sorted(engine.batches[2]) == [12, 300]
    assert all(c is not None and c.finish_reason for c in done)


def test_queue_is_bounded() -> None:
    hold = threading.Event()
    scheduler = Scheduler(_Recorder(hold), name="t", max_batch=1, window_ms=0, max_queue=2)
    done: list[StreamChunk | None] = []
    scheduler.submit([_row(5, done)])
    time.sleep(0.1)  # taken by the worker, which is now held
    scheduler.submit([_row(5, done), _row(5, done)])
    with pytest.raises(QueueFull) as full:
        scheduler.submit([_row(5, done)])
    assert full.value.retry_after_s >= 1
    hold.set()
    scheduler.close()


def test_ct2_groups_respect_the_length_slack() -> None:
    done: list[StreamChunk | None] = []
    rows = [_row(n, done) for n in (50, 52, 58, 200, 205)]  # max_new_tokens 8 → slack 8
    groups = ct2_groups(rows, 16)
    assert sorted(sorted(len(rows[i].prompt_ids) for i in g) for g in groups) == [[50, 52, 58], [200, 205]]


def test_sampling_key_splits_seeds_and_greedy() -> None:
    assert sampling_key(GenerationParams()) == sampling_key(GenerationParams(max_new_tokens=3))
    assert sampling_key(GenerationParams(temperature=0.7, seed=1)) != sampling_key(
        GenerationParams(temperature=0.7, seed=2)
    )


def test_row_text_holds_back_a_possible_stop_and_cuts_at_it() -> None:
    text = RowText(_CharTokenizer(), stop=["END"], eos={0}, max_tokens=100)
    out = "".join(text.push(ord(c)) for c in "hello EN")
    assert out == "hello"  # " EN" might start "END": held back
    out += text.push(ord("D"))
    assert out == "hello " and text.done and text.finish_reason == "stop"


def test_row_text_budget_and_eos() -> None:
    budget = RowText(_CharTokenizer(), stop=[], eos={0}, max_tokens=3)
    assert "".join(budget.push(ord(c)) for c in "abcd") == "abc" and budget.finish_reason == "length"
    eos = RowText(_CharTokenizer(), stop=[], eos={0}, max_tokens=10)
    assert eos.push(ord("a")) + eos.push(0) == "a" and eos.finish_reason == "stop" and eos.push(ord("b")) == ""
