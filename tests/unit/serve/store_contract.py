"""The FeedbackStore contract, as checks that take an open, empty store: run on SQLite (unit) and PostgreSQL
(integration/serve/test_store_postgres.py), so both backends are held to the same behaviour."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tailorlm.serve import store as store_module
from tailorlm.serve.store import FeedbackRecord, FeedbackStore, ResponseRecord, UnknownResponseError

T0 = 1_700_000_000.0


def response(rid: str, created: float = T0, **kw: Any) -> ResponseRecord:
    base: dict[str, Any] = {
        "id": rid,
        "created": created,
        "model": "m",
        "system": "sys-a",
        "request": {"messages": [{"role": "user", "content": f"q {rid}"}]},
        "response": f"answer {rid}",
    }
    return ResponseRecord(**(base | kw))


def check_roundtrip(store: FeedbackStore) -> None:
    r = response(
        "chatcmpl-1",
        experiment="exp",
        arm="a",
        user="u1",
        citations=[{"doc": "d", "score": 0.5}],
        abstained=True,
        ttft_ms=12.5,
        latency_ms=80.0,
        prompt_tokens=7,
        completion_tokens=3,
    )
    store.record_response(r)
    assert store.get_response("chatcmpl-1") == r
    assert store.get_response("nope") is None
    f = FeedbackRecord(response_id="chatcmpl-1", rating="up", score=5, comment="ünïcode ✓", user="u1", created=T0 + 1)
    store.record_feedback(f)
    assert list(store.feedback()) == [f]
    assert f.id.startswith("fb-")
    assert store.counts() == {"responses": 1, "feedback": 1}


def check_filters(store: FeedbackStore) -> None:
    for i in range(6):
        exp = "exp" if i % 2 else None
        store.record_response(response(f"r{i}", T0 + i, model="exp" if exp else "m", experiment=exp, arm="a"))
        store.record_feedback(FeedbackRecord(id=f"fb{i}", response_id=f"r{i}", rating="up", created=T0 + 10 + i))
    ids = lambda it: [x.id for x in it]  # noqa: E731
    assert ids(store.responses()) == [f"r{i}" for i in range(6)]
    assert ids(store.responses(since=T0 + 2, until=T0 + 4)) == ["r2", "r3"]  # since inclusive, until exclusive
    assert ids(store.responses(experiment="exp")) == ["r1", "r3", "r5"]
    assert ids(store.responses(model="m")) == ["r0", "r2", "r4"]
    assert ids(store.feedback(since=T0 + 14)) == ["fb4", "fb5"]
    assert ids(store.feedback(experiment="exp")) == ["fb1", "fb3", "fb5"]


def check_paging(store: FeedbackStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyset pages of 3 over equal timestamps: every row once, in (created, id) order."""
    monkeypatch.setattr(store_module, "PAGE_SIZE", 3)
    if "tailorlm.serve.store_pg" in sys.modules:
        monkeypatch.setattr(sys.modules["tailorlm.serve.store_pg"], "PAGE_SIZE", 3)
    for i in range(10):
        store.record_response(response(f"r{i:02d}", T0 + (i // 4)))
    assert [r.id for r in store.responses()] == [f"r{i:02d}" for i in range(10)]
    assert [r.id for r in store.responses(since=T0 + 1)] == [f"r{i:02d}" for i in range(4, 10)]


def check_unknown_response(store: FeedbackStore) -> None:
    store.record_response(response("r1"))
    with pytest.raises(UnknownResponseError, match="'missing'"):
        store.record_feedback(FeedbackRecord(response_id="missing", rating="up"))
    with pytest.raises(UnknownResponseError, match="'other'"):
        store.record_feedback(FeedbackRecord(response_id="r1", compare_to="other", choice="this"))
    assert store.counts() == {"responses": 1, "feedback": 0}
    store.record_feedback(FeedbackRecord(response_id="r1", rating="down"))  # the store still works afterwards
    assert store.counts()["feedback"] == 1


def check_idempotent_and_promote(store: FeedbackStore) -> None:
    store.record_response(response("r1", response="first"))
    store.record_response(response("r1", response="retried"))
    assert store.get_response("r1").response == "retried"  # type: ignore[union-attr]
    store.record_feedback(FeedbackRecord(id="fb", response_id="r1", rating="up"))
    store.record_feedback(FeedbackRecord(id="fb", response_id="r1", rating="down"))
    assert [f.rating for f in store.feedback()] == ["down"]
    assert store.promoted("exp") is None
    store.promote("exp", "b", "sys-b")
    store.promote("exp", "a", "sys-a")
    assert store.promoted("exp") == "sys-a"


def check_concurrent_writers(store: FeedbackStore, threads: int = 8, each: int = 15) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(each):
                rid = f"t{t}-{i}"
                store.record_response(response(rid, T0 + i))
                store.record_feedback(FeedbackRecord(response_id=rid, score=1 + i % 5))
                store.get_response(rid)
        except BaseException as err:  # reported in the main thread
            errors.append(err)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert store.counts() == {"responses": threads * each, "feedback": threads * each}
    assert len({f.response_id for f in store.feedback()}) == threads * each


STORE_CONTRACT: list[Callable[[FeedbackStore], None]] = [
    check_roundtrip,
    check_filters,
    check_unknown_response,
    check_idempotent_and_promote,
    check_concurrent_writers,
]

_WRITER = """
import sys, time
from tailorlm.serve.store import FeedbackRecord, ResponseRecord, open_store
store = open_store(sys.argv[1])
store.record_response(ResponseRecord(id="r-kill", created=1.0, model="m", system="s",
                                     request={"prompt": "p"}, response="a"))
store.record_feedback(FeedbackRecord(id="fb-kill", response_id="r-kill", rating="up"))
print("committed", flush=True)
time.sleep(60)
"""


def check_survives_sigkill(location: str, reopen: Callable[[], FeedbackStore]) -> None:
    """A writer killed with SIGKILL right after record_feedback returned: the feedback is there on reopen."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), location], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "committed", f"writer failed (exit {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
    store = reopen()
    try:
        assert [f.id for f in store.feedback()] == ["fb-kill"]
        assert store.get_response("r-kill") is not None
    finally:
        store.close()
