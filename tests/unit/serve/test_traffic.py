"""The traffic report's numbers on a small hand-made store, and the --since/--until time parser."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from tailorlm.errors import ConfigError
from tailorlm.serve.store import FeedbackRecord, ResponseRecord, SQLiteStore
from tailorlm.serve.traffic import as_json, parse_time, render_traffic, traffic_report

pytestmark = pytest.mark.unit

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1h", NOW - 3600),
        ("1h", NOW - 3600),
        ("-7d", NOW - 7 * 86400),
        ("30m", NOW - 1800),
        ("90s", NOW - 90),
        ("2w", NOW - 14 * 86400),
        ("now", NOW),
        ("1735689600", 1735689600.0),
        ("2025-01-01T00:00:00Z", datetime(2025, 1, 1, tzinfo=UTC).timestamp()),
        ("2025-01-01T01:00:00+01:00", datetime(2025, 1, 1, tzinfo=UTC).timestamp()),
        ("2025-01-01", datetime(2025, 1, 1).timestamp()),  # no offset: local time
        (None, None),
        ("", None),
    ],
)
def test_parse_time(text: str | None, expected: float | None) -> None:
    assert parse_time(text, now=NOW) == expected


def test_parse_time_error() -> None:
    with pytest.raises(ConfigError, match="cannot read the time 'yesterday'") as err:
        parse_time("yesterday")
    assert "-7d" in (err.value.hint or "")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "fb.sqlite")
    yield s
    s.close()


def add(store: SQLiteStore, rid: str, t: float, system: str = "rag", **kw: object) -> None:
    store.record_response(
        ResponseRecord(
            id=rid, created=NOW + t, model="chat", system=system, request={"prompt": "p"}, response="a", **kw
        )  # type: ignore[arg-type]
    )


def test_traffic_report(store: SQLiteStore) -> None:
    # rag: 4 answered (latency 100..400, ttft 10..40), 1 client error, 1 server error; 3 RAG answers, 1 abstained
    for i in range(4):
        cites = [{"doc": "d"}] if i < 2 else ([] if i == 2 else None)
        add(
            store,
            f"r{i}",
            i,
            latency_ms=100.0 * (i + 1),
            ttft_ms=10.0 * (i + 1),
            prompt_tokens=10,
            completion_tokens=5,
            citations=cites,
            abstained=i == 2,
        )
    add(store, "bad", 5, status=400, error="bad")
    add(store, "boom", 6, status=503, error="overloaded")
    add(store, "s1", 7, system="cand", shadow=True, latency_ms=50.0)
    add(store, "old", -100)  # before the period
    store.record_feedback(FeedbackRecord(response_id="r0", rating="up", created=NOW + 10))
    store.record_feedback(FeedbackRecord(response_id="r1", rating="down", score=2, created=NOW + 11))
    store.record_feedback(FeedbackRecord(response_id="r1", score=5, edited="x", comment="c", created=NOW + 12))
    store.record_feedback(FeedbackRecord(response_id="r0", compare_to="s1", choice="tie", created=NOW + 13))
    store.record_feedback(FeedbackRecord(response_id="old", rating="up", created=NOW + 14))  # old answer, new feedback

    report = traffic_report(store, since=NOW, until=NOW + 100)
    rows = {(r.system, r.shadow): r for r in report.rows}
    rag = rows[("rag", False)]
    assert (rag.requests, rag.errors, rag.errors_5xx) == (6, 2, 1)  # "old" is outside the period; its feedback is not
    assert (rag.latency_p50_ms, rag.latency_p95_ms) == pytest.approx((250.0, 385.0))  # 300 + 0.85 · 100
    assert (rag.ttft_p50_ms, rag.prompt_tokens, rag.completion_tokens) == (25.0, 40, 20)
    assert (rag.up, rag.down, rag.scores, rag.score_mean, rag.edits, rag.comments, rag.pairwise) == (
        2,
        1,
        2,
        3.5,
        1,
        1,
        1,
    )
    assert (rag.rag_answers, rag.abstained, rag.abstain_rate) == (3, 1, 1 / 3)
    cand = rows[("cand", True)]
    assert (cand.requests, cand.latency_p50_ms, cand.rag_answers, cand.abstain_rate) == (1, 50.0, 0, None)
    assert report.total.requests == 7 and as_json(report)["total"]["errors"] == 2
    console = Console(record=True, width=200)
    console.print(render_traffic(report))
    assert "cand (shadow)" in console.export_text()
