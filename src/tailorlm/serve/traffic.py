"""The traffic report (``tailor serve --report``): volume, errors, latency, tokens and feedback over a period.

One row per (requested model, answering System, shadow or not), so an experiment's arms and its shadow
Systems show separately, plus a total. The abstention share is over RAG answers only: a response counts as a
RAG answer when its System returned a citations list (``citations is not None``, possibly empty), since a RAG
System that abstains typically cites nothing; dividing by "responses with citations" would miss exactly those.

Also here: ``parse_time``, the time parser of every ``--since``/``--until`` option.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Group
from rich.table import Table

from tailorlm.core.safe_text import safe_cell
from tailorlm.errors import ConfigError
from tailorlm.serve.stats import quantile
from tailorlm.serve.store import FeedbackRecord, FeedbackStore, ResponseRecord

_RELATIVE = re.compile(r"-?\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str | None, *, now: float | None = None) -> float | None:
    """``--since``/``--until`` → unix time. ``None``/empty → None (unbounded).

    Accepts ISO 8601 (``2025-03-01``, ``2025-03-01T12:00:00+00:00``; without an offset it is local time, as
    ``date`` prints it), a duration ago (``-1h``, ``7d``, ``30m``, ``90s``, ``2w``: the sign is optional, a
    period always reaches back), ``now``, or a unix timestamp (``1735689600``).
    """
    if text is None or not text.strip():
        return None
    value = text.strip()
    now = time.time() if now is None else now
    if value.lower() == "now":
        return now
    if m := _RELATIVE.fullmatch(value):
        return now - float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
    if re.fullmatch(r"\d{9,}(\.\d+)?", value):
        return float(value)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ConfigError(
            f"cannot read the time {value!r}",
            hint="use ISO 8601 (2025-03-01 or 2025-03-01T12:00:00Z), a duration ago (-1h, -7d, 30m), or now",
        ) from None


class TrafficRow(BaseModel):
    model: str  # what clients asked for ("all" in the total)
    system: str  # what answered ("all" in the total)
    shadow: bool
    requests: int
    errors: int  # status >= 400
    errors_5xx: int  # the server's fault, as opposed to a client's
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    up: int
    down: int
    scores: int
    score_mean: float | None
    edits: int
    pairwise: int
    comments: int
    rag_answers: int  # responses whose System returned citations (a list, maybe empty)
    abstained: int
    abstain_rate: float | None  # abstained / rag_answers


class TrafficReport(BaseModel):
    since: float | None
    until: float | None
    rows: list[TrafficRow]
    total: TrafficRow


def _row(model: str, system: str, shadow: bool, rs: list[ResponseRecord], fb: list[FeedbackRecord]) -> TrafficRow:
    errors = [r for r in rs if r.status >= 400]
    ok = [r for r in rs if r.status < 400]
    ttfts = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    scores = [f.score for f in fb if f.score is not None]
    rag = [r for r in rs if r.citations is not None]
    abstained = sum(1 for r in rag if r.abstained)
    return TrafficRow(
        model=model,
        system=system,
        shadow=shadow,
        requests=len(rs),
        errors=len(errors),
        errors_5xx=sum(1 for r in errors if r.status >= 500),
        error_rate=len(errors) / len(rs) if rs else None,
        latency_p50_ms=quantile([r.latency_ms for r in ok], 0.5),
        latency_p95_ms=quantile([r.latency_ms for r in ok], 0.95),
        ttft_p50_ms=quantile(ttfts, 0.5),
        ttft_p95_ms=quantile(ttfts, 0.95),
        prompt_tokens=sum(r.prompt_tokens for r in rs),
        completion_tokens=sum(r.completion_tokens for r in rs),
        up=sum(1 for f in fb if f.rating == "up"),
        down=sum(1 for f in fb if f.rating == "down"),
        scores=len(scores),
        score_mean=sum(scores) / len(scores) if scores else None,
        edits=sum(1 for f in fb if f.edited is not None and f.edited.strip()),
        pairwise=sum(1 for f in fb if f.choice is not None),
        comments=sum(1 for f in fb if f.comment is not None and f.comment.strip()),
        rag_answers=len(rag),
        abstained=abstained,
        abstain_rate=abstained / len(rag) if rag else None,
    )


def traffic_report(store: FeedbackStore, *, since: float | None, until: float | None) -> TrafficReport:
    """Responses created in ``[since, until)``, and feedback given in that period (on any response)."""
    groups: dict[tuple[str, str, bool], list[ResponseRecord]] = defaultdict(list)
    by_id: dict[str, ResponseRecord] = {}
    for r in store.responses(since=since, until=until):
        groups[(r.model, r.system, r.shadow)].append(r)
        by_id[r.id] = r
    feedback: dict[tuple[str, str, bool], list[FeedbackRecord]] = defaultdict(list)
    for f in store.feedback(since=since, until=until):
        r = by_id.get(f.response_id) or store.get_response(f.response_id)
        if r is not None:
            by_id[r.id] = r
            feedback[(r.model, r.system, r.shadow)].append(f)
    keys = sorted(set(groups) | set(feedback))
    rows = [_row(*k, groups.get(k, []), feedback.get(k, [])) for k in keys]
    all_rs = [r for k in keys for r in groups.get(k, [])]
    all_fb = [f for k in keys for f in feedback.get(k, [])]
    return TrafficReport(since=since, until=until, rows=rows, total=_row("all", "all", False, all_rs, all_fb))


def _n(x: float | None, fmt: str = ".0f") -> str:
    return "–" if x is None else format(x, fmt)


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t is not None else "…"


def render_traffic(report: TrafficReport) -> Group:
    """Two Rich tables: traffic (volume, errors, latency, tokens) and feedback (with the RAG abstention share)."""
    title = f"traffic {_when(report.since)} → {_when(report.until)}"
    traffic = Table(title=title, title_justify="left")
    feedback = Table(title="feedback", title_justify="left")
    for col in ("model", "system"):
        traffic.add_column(col)
        feedback.add_column(col)
    for col in ("requests", "errors (5xx)", "p50 ms", "p95 ms", "ttft p50", "ttft p95", "tokens in/out"):
        traffic.add_column(col, justify="right")
    for col in ("up/down", "score", "edits", "pairwise", "comments", "RAG answers", "abstained"):
        feedback.add_column(col, justify="right")
    for row in [*report.rows, report.total]:
        model, system = safe_cell(row.model), safe_cell(row.system) + (" (shadow)" if row.shadow else "")
        last = row is report.total
        traffic.add_row(
            model,
            system,
            str(row.requests),
            f"{row.errors} ({row.errors_5xx})",
            _n(row.latency_p50_ms),
            _n(row.latency_p95_ms),
            _n(row.ttft_p50_ms),
            _n(row.ttft_p95_ms),
            f"{row.prompt_tokens}/{row.completion_tokens}",
            end_section=not last and row is report.rows[-1],
        )
        feedback.add_row(
            model,
            system,
            f"{row.up}/{row.down}",
            f"{_n(row.score_mean, '.2f')} (n={row.scores})",
            str(row.edits),
            str(row.pairwise),
            str(row.comments),
            str(row.rag_answers),
            f"{row.abstained} ({_n(row.abstain_rate, '.0%')})",
            end_section=not last and row is report.rows[-1],
        )
    return Group(traffic, feedback)


def as_json(report: TrafficReport) -> dict[str, Any]:
    return report.model_dump(mode="json")
