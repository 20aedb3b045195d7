"""The A/B report: per-arm statistics, the comparisons between arms, and a verdict with its reason.

Two kinds of evidence can decide:

- **thumbs**: each arm's up-rate (ups / rated responses), compared with the up-rate difference, its Newcombe
  interval and a two-sided **Fisher exact test** (exact at any sample size; see ``stats.fisher_p``);
- **pairwise**: a user shown two answers to the same request picked one. Only choices between two *different
  arms* of this experiment count; the head-to-head win rate (ties left out) is tested against 0.5 with an exact
  two-sided **binomial test** (``scipy.stats.binomtest``), with a Wilson interval.

Scores (1–5) are reported with a bootstrap interval of the mean but do not decide: thumbs and choices are the
feedback a served UI collects the most of, and a third test would add a third chance of a false winner.

With more than two arms the best arm (highest up-rate, or highest pairwise win rate) is compared with each of
the others, and those k-1 p-values are corrected with **Holm**'s step-down method (``stats.holm``): the best arm
wins only if it beats every other arm after correction. A metric may decide only when every compared arm has
``min_samples`` rated responses (thumbs) or head-to-head choices (pairwise). When both metrics decide they must
agree; a conflict is reported undecided.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import BaseModel
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tailorlm.core.safe_text import printable, safe_cell
from tailorlm.serve.stats import (
    binomial_p,
    bootstrap_mean_ci,
    fisher_p,
    holm,
    newcombe_interval,
    quantile,
    wilson_interval,
)
from tailorlm.serve.store import FeedbackRecord, ResponseRecord

Interval = tuple[float, float] | None


class ArmStats(BaseModel):
    arm: str
    systems: list[str]
    requests: int
    errors: int  # status >= 400
    error_rate: float | None
    latency_p50_ms: float | None  # of successful responses: an error's latency says nothing about answering
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    up: int
    down: int
    up_rate: float | None
    up_rate_ci: Interval
    scores: int
    score_mean: float | None
    score_ci: Interval
    pairwise_wins: int  # against the other arms of this experiment
    pairwise_losses: int
    pairwise_ties: int
    pairwise_win_rate: float | None  # wins / (wins + losses)
    pairwise_win_rate_ci: Interval

    @property
    def rated(self) -> int:
        return self.up + self.down


class ShadowStats(BaseModel):
    """A shadow System: never seen by clients, so it only gets feedback in a compare view."""

    system: str
    requests: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    up: int
    down: int
    pairwise_wins: int  # against the arms' answers to the same requests
    pairwise_losses: int
    pairwise_ties: int


class Comparison(BaseModel):
    """The best arm against one other arm, on one metric."""

    metric: Literal["up_rate", "pairwise"]
    arm: str
    other: str
    estimate: float  # up-rate difference (arm - other), or the arm's head-to-head win rate
    ci: Interval
    p_value: float
    p_adjusted: float  # Holm over this metric's comparisons (equal to p_value with two arms)
    n: int  # rated responses of both arms, or decisive head-to-head choices
    enough: bool  # the sample reaches min_samples
    significant: bool  # enough, p_adjusted < alpha, and in the arm's favour


class ABReport(BaseModel):
    experiment: str
    since: float | None = None
    until: float | None = None
    alpha: float
    min_samples: int
    correction: Literal["holm"] = "holm"
    arms: list[ArmStats]
    shadow: list[ShadowStats]
    comparisons: list[Comparison]
    winner: str | None
    decided: bool
    reason: str
    promoted: str | None = None  # the System already promoted, if any


def _latest(feedback: list[FeedbackRecord], field: str) -> dict[str, FeedbackRecord]:
    """Per response, its latest feedback that sets ``field``; ``feedback`` comes ordered by time."""
    return {f.response_id: f for f in feedback if getattr(f, field) is not None}


def _pairwise(
    feedback: list[FeedbackRecord], by_id: dict[str, ResponseRecord], name: str
) -> list[tuple[tuple[str, str], tuple[str, str], str]]:
    """``(side this, side other, choice)`` per pair of responses (its latest choice); a side is
    ``("arm", arm)`` or ``("shadow", system)``; pairs with a response outside this experiment are dropped."""
    latest: dict[frozenset[str], FeedbackRecord] = {}
    for f in feedback:
        if f.choice is not None and f.compare_to is not None:
            latest[frozenset((f.response_id, f.compare_to))] = f

    def side(rid: str) -> tuple[str, str] | None:
        r = by_id.get(rid)
        if r is None or r.experiment != name or r.status >= 400:
            return None
        if r.shadow:
            return ("shadow", r.system)
        return ("arm", r.arm) if r.arm is not None else None

    out = []
    for f in latest.values():
        a, b = side(f.response_id), side(f.compare_to or "")
        if a is not None and b is not None and a != b:
            out.append((a, b, f.choice or "tie"))
    return out


def build_report(
    name: str,
    responses: list[ResponseRecord],
    feedback: list[FeedbackRecord],
    configured_arms: list[str],
    *,
    alpha: float,
    min_samples: int,
) -> ABReport:
    """The report from the experiment's responses (shadow ones included) and the feedback on them."""
    by_id = {r.id: r for r in responses}
    ratings, scores = _latest(feedback, "rating"), _latest(feedback, "score")
    groups: dict[tuple[str, str], list[ResponseRecord]] = defaultdict(list)
    for r in responses:
        if r.experiment == name and (r.shadow or r.arm is not None):
            groups[("shadow", r.system) if r.shadow else ("arm", r.arm or "")].append(r)
    for arm in configured_arms:
        groups.setdefault(("arm", arm), [])
    # wins[(x, y)]: choices of x's answer over y's; ties[(x, y)] counted under both orders.
    wins: dict[tuple[tuple[str, str], tuple[str, str]], int] = defaultdict(int)
    ties: dict[tuple[tuple[str, str], tuple[str, str]], int] = defaultdict(int)
    for a, b, choice in _pairwise(feedback, by_id, name):
        if choice == "tie":
            ties[(a, b)] += 1
            ties[(b, a)] += 1
        else:
            wins[(a, b) if choice == "this" else (b, a)] += 1

    arms, shadow = [], []
    arm_keys = sorted(k for k in groups if k[0] == "arm")
    for key in sorted(groups):
        rs = groups[key]
        ok = [r for r in rs if r.status < 400]
        latencies = [r.latency_ms for r in ok]
        up = sum(1 for r in ok if r.id in ratings and ratings[r.id].rating == "up")
        down = sum(1 for r in ok if r.id in ratings and ratings[r.id].rating == "down")
        # Arms are scored against arms only; a shadow against everything it was compared with (the arms).
        opponents = [k for k in arm_keys if k != key] if key[0] == "arm" else arm_keys
        w = sum(wins[(key, o)] for o in opponents)
        lost = sum(wins[(o, key)] for o in opponents)
        t = sum(ties[(key, o)] for o in opponents)
        errors = len(rs) - len(ok)
        if key[0] == "shadow":
            shadow.append(
                ShadowStats(
                    system=key[1],
                    requests=len(rs),
                    errors=errors,
                    latency_p50_ms=quantile(latencies, 0.5),
                    latency_p95_ms=quantile(latencies, 0.95),
                    up=up,
                    down=down,
                    pairwise_wins=w,
                    pairwise_losses=lost,
                    pairwise_ties=t,
                )
            )
            continue
        score_values = [float(scores[r.id].score or 0) for r in ok if r.id in scores]
        arms.append(
            ArmStats(
                arm=key[1],
                systems=sorted({r.system for r in rs}),
                requests=len(rs),
                errors=errors,
                error_rate=errors / len(rs) if rs else None,
                latency_p50_ms=quantile(latencies, 0.5),
                latency_p95_ms=quantile(latencies, 0.95),
                ttft_p50_ms=quantile([r.ttft_ms for r in ok if r.ttft_ms is not None], 0.5),
                up=up,
                down=down,
                up_rate=up / (up + down) if up + down else None,
                up_rate_ci=wilson_interval(up, up + down, alpha),
                scores=len(score_values),
                score_mean=sum(score_values) / len(score_values) if score_values else None,
                score_ci=bootstrap_mean_ci(score_values, alpha),
                pairwise_wins=w,
                pairwise_losses=lost,
                pairwise_ties=t,
                pairwise_win_rate=w / (w + lost) if w + lost else None,
                pairwise_win_rate_ci=wilson_interval(w, w + lost, alpha),
            )
        )
    comparisons = _compare(arms, wins, alpha, min_samples)
    winner, decided, reason = _verdict(arms, comparisons, wins, min_samples)
    return ABReport(
        experiment=name,
        alpha=alpha,
        min_samples=min_samples,
        arms=arms,
        shadow=shadow,
        comparisons=comparisons,
        winner=winner,
        decided=decided,
        reason=reason,
    )


def _compare(arms: list[ArmStats], wins: dict, alpha: float, min_samples: int) -> list[Comparison]:
    """The best arm against each other arm, per metric, Holm-corrected within the metric."""
    out: list[Comparison] = []
    by_rate = [a for a in arms if a.up_rate is not None]
    if len(by_rate) >= 2 and len(by_rate) == len(arms):
        best = max(by_rate, key=lambda a: (a.up_rate or 0.0, a.rated, a.arm))
        rows = []
        for o in (a for a in arms if a is not best):
            p = fisher_p(best.up, best.rated, o.up, o.rated)
            ci = newcombe_interval(best.up, best.rated, o.up, o.rated, alpha)
            diff = (best.up_rate or 0.0) - (o.up_rate or 0.0)
            enough = min(best.rated, o.rated) >= min_samples
            rows.append(("up_rate", best.arm, o.arm, diff, ci, p, best.rated + o.rated, enough))
        out += _holm_rows(rows, alpha)
    by_pairs = [a for a in arms if a.pairwise_win_rate is not None]
    if len(by_pairs) >= 2:
        best = max(by_pairs, key=lambda a: (a.pairwise_win_rate or 0.0, a.pairwise_wins, a.arm))
        rows = []
        for o in (a for a in arms if a is not best):
            w, lost = wins[(("arm", best.arm), ("arm", o.arm))], wins[(("arm", o.arm), ("arm", best.arm))]
            n = w + lost
            rows.append(
                (
                    "pairwise",
                    best.arm,
                    o.arm,
                    w / n if n else 0.5,
                    wilson_interval(w, n, alpha),
                    binomial_p(w, n),
                    n,
                    n >= min_samples,
                )
            )
        out += _holm_rows(rows, alpha)
    return out


def _holm_rows(rows: list[tuple], alpha: float) -> list[Comparison]:
    adjusted = holm([r[5] for r in rows])
    out = []
    for (metric, arm, other, est, ci, p, n, enough), p_adj in zip(rows, adjusted, strict=True):
        favours = est > (0.0 if metric == "up_rate" else 0.5)
        out.append(
            Comparison(
                metric=metric,
                arm=arm,
                other=other,
                estimate=est,
                ci=ci,
                p_value=p,
                p_adjusted=p_adj,
                n=n,
                enough=enough,
                significant=enough and favours and p_adj < alpha,
            )
        )
    return out


def _describe(c: Comparison, arms: dict[str, ArmStats]) -> str:
    lo, hi = c.ci or (float("nan"), float("nan"))
    p = f"p={c.p_adjusted:.3g}" + (" (Holm)" if c.p_adjusted != c.p_value else "")
    if c.metric == "up_rate":
        a, o = arms[c.arm], arms[c.other]
        return (
            f"up-rate {a.up_rate:.2f} vs {o.up_rate:.2f} ({c.other}), "
            f"difference {c.estimate:.2f} [{lo:.2f}, {hi:.2f}], {p}"
        )
    return f"wins {c.estimate:.2f} [{lo:.2f}, {hi:.2f}] of {c.n} pairwise choices against {c.other}, {p}"


def _verdict(
    arms: list[ArmStats], comparisons: list[Comparison], wins: dict, min_samples: int
) -> tuple[str | None, bool, str]:
    by_name = {a.arm: a for a in arms}
    if len([a for a in arms if a.requests]) < 2:
        return None, False, "too small to decide: fewer than two arms have responses"
    decided: dict[str, tuple[str, list[Comparison]]] = {}
    enough: dict[str, list[Comparison]] = {}
    for metric in ("up_rate", "pairwise"):
        cs = [c for c in comparisons if c.metric == metric]
        if cs and all(c.enough for c in cs):
            enough[metric] = cs
            if all(c.significant for c in cs):
                decided[metric] = (cs[0].arm, cs)
    winners = {w for w, _ in decided.values()}
    if len(winners) > 1:
        said = "; ".join(f"{m.replace('_', '-')} prefers {w}" for m, (w, _) in decided.items())
        return None, False, f"the evidence conflicts: {said}"
    if decided:
        winner = winners.pop()
        parts = [_describe(c, by_name) for _, cs in decided.values() for c in cs]
        return winner, True, f"arm {winner} preferred: " + "; ".join(parts)
    if enough:
        parts = [_describe(c, by_name) for cs in enough.values() for c in cs]
        return None, False, "no significant difference yet: " + "; ".join(parts)
    fewest = min(arms, key=lambda a: (a.rated, a.arm))
    reason = f"too small to decide: arm {fewest.arm} has {fewest.rated} rated responses, {min_samples} needed"
    pairs = [c for c in comparisons if c.metric == "pairwise"]
    if pairs:
        c = min(pairs, key=lambda c: c.n)
        reason += f", and {c.n} pairwise choices between {c.arm} and {c.other}, {min_samples} needed"
    return None, False, reason


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "–" if x is None else format(x, fmt)


def _ci(x: float | None, ci: Interval) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def render_report(report: ABReport) -> Group:
    """Rich tables: the arms, the shadow Systems, the comparisons, then the verdict."""
    arms = Table(title=f"experiment {safe_cell(report.experiment)}", title_justify="left")
    for col in ("arm", "systems", "requests", "errors", "p50 ms", "p95 ms", "ttft p50", "up/down", "up-rate"):
        arms.add_column(col, justify="left" if col in ("arm", "systems") else "right")
    for col in ("score", "pairwise W/L/T", "win rate"):
        arms.add_column(col, justify="right")
    for a in report.arms:
        arms.add_row(
            safe_cell(a.arm),
            safe_cell(", ".join(a.systems)),
            str(a.requests),
            f"{a.errors} ({_num(a.error_rate, '.1%')})",
            _num(a.latency_p50_ms),
            _num(a.latency_p95_ms),
            _num(a.ttft_p50_ms),
            f"{a.up}/{a.down}",
            _ci(a.up_rate, a.up_rate_ci),
            _ci(a.score_mean, a.score_ci),
            f"{a.pairwise_wins}/{a.pairwise_losses}/{a.pairwise_ties}",
            _ci(a.pairwise_win_rate, a.pairwise_win_rate_ci),
        )
    parts: list[Table | Text] = [arms]
    if report.shadow:
        shadow = Table(
            "shadow System",
            "requests",
            "errors",
            "p50 ms",
            "p95 ms",
            "up/down",
            "pairwise W/L/T",
            title="shadow (excluded from the arms)",
            title_justify="left",
        )
        for s in report.shadow:
            shadow.add_row(
                safe_cell(s.system),
                str(s.requests),
                str(s.errors),
                _num(s.latency_p50_ms),
                _num(s.latency_p95_ms),
                f"{s.up}/{s.down}",
                f"{s.pairwise_wins}/{s.pairwise_losses}/{s.pairwise_ties}",
            )
        parts.append(shadow)
    if report.comparisons:
        comps = Table(
            "metric",
            "arm",
            "vs",
            "estimate",
            f"{1 - report.alpha:.0%} CI",
            "p",
            "p (Holm)",
            "n",
            title="comparisons (best arm vs each other)",
            title_justify="left",
        )
        for c in report.comparisons:
            ci = f"[{c.ci[0]:.2f}, {c.ci[1]:.2f}]" if c.ci else "–"
            comps.add_row(
                c.metric,
                safe_cell(c.arm),
                safe_cell(c.other),
                f"{c.estimate:.2f}",
                ci,
                f"{c.p_value:.3g}",
                f"{c.p_adjusted:.3g}",
                str(c.n) + ("" if c.enough else " (too few)"),
            )
        parts.append(comps)
    style = "bold green" if report.decided else "yellow"
    parts.append(Text(printable(report.reason), style=style))  # Text: no markup is parsed
    if report.promoted:
        parts.append(Text(f"promoted: all traffic goes to {printable(report.promoted)}", style="bold"))
    return Group(*parts)
