"""A/B experiments: the statistics against hand-computed values, sticky assignment, the report's verdicts, promote."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
from rich.console import Console

from tailorlm.errors import ConfigError, TailorError
from tailorlm.serve.ab import (
    Experiment,
    ab_report,
    as_json,
    assign_arm,
    load_experiments,
    promote,
    render_report,
    route,
)
from tailorlm.serve.stats import binomial_p, bootstrap_mean_ci, fisher_p, holm, newcombe_interval, wilson_interval
from tailorlm.serve.store import FeedbackRecord, ResponseRecord, SQLiteStore

pytestmark = pytest.mark.unit

EXP = Experiment(name="exp", arms={"a": {"system": "sys-a"}, "b": {"system": "sys-b"}})  # type: ignore[dict-item]
_ids = count()


# --- statistics -------------------------------------------------------------------------------------------------


def test_wilson_interval_hand_computed() -> None:
    # 8/10, z = 1.959964: centre (0.8 + 0.19207) / 1.38415 = 0.71679, half 1.41600 · sqrt(0.016 + 0.00960) = 0.22653
    low, high = wilson_interval(8, 10)  # type: ignore[misc]
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    # 0/10: the interval starts at 0 and is not empty (the Wald interval would be [0, 0])
    low, high = wilson_interval(0, 10)  # type: ignore[misc]
    assert low == 0.0 and round(high, 4) == 0.2775
    assert wilson_interval(0, 0) is None


def test_newcombe_interval_published_example() -> None:
    # Newcombe (1998), Table II, example (a): 56/70 - 48/80 = 0.20, method 10 interval [0.0524, 0.3339]
    low, high = newcombe_interval(56, 70, 48, 80)  # type: ignore[misc]
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_exact_tests_hand_computed() -> None:
    # 9 or more of 10 (or 1 or fewer), two-sided: 2 · (C(10,9) + C(10,10)) / 2^10 = 22 / 1024
    assert binomial_p(9, 10) == pytest.approx(22 / 1024, rel=1e-12)
    assert binomial_p(0, 0) == 1.0
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: two-sided p = (1 + 16 + 16 + 1) / C(8, 4) = 34 / 70
    assert fisher_p(3, 4, 1, 4) == pytest.approx(34 / 70, rel=1e-12)


def test_holm_adjustment() -> None:
    # sorted 0.01, 0.03, 0.04 → 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04); returned in input order
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_bootstrap_is_seeded_and_sane() -> None:
    scores = [1, 2, 3, 4, 5, 5, 4, 4, 3, 5]
    ci = bootstrap_mean_ci(scores)
    assert ci == bootstrap_mean_ci(scores)  # same data, same interval
    assert ci is not None and ci[0] < 3.6 < ci[1]
    assert bootstrap_mean_ci([4]) is None
    assert bootstrap_mean_ci([4, 4, 4]) == (4.0, 4.0)


# --- config and assignment ---------------------------------------------------------------------------------


def test_sticky_assignment_is_stable_and_weighted() -> None:
    exp = Experiment(name="exp", arms={"a": {"system": "x", "weight": 1}, "b": {"system": "y", "weight": 3}})  # type: ignore[dict-item]
    ids = [f"user-{i}" for i in range(10_000)]
    arms = [assign_arm(exp, i) for i in ids]
    assert arms == [assign_arm(exp, i) for i in ids]  # stable
    share = Counter(arms)["a"] / len(ids)
    assert abs(share - 0.25) < 0.02
    # File order does not matter, the experiment's name salts the hash.
    flipped = Experiment(name="exp", arms={"b": exp.arms["b"], "a": exp.arms["a"]})
    assert [assign_arm(flipped, i) for i in ids[:500]] == arms[:500]
    other = exp.model_copy(update={"name": "other"})
    assert [assign_arm(other, i) for i in ids[:500]] != arms[:500]


def test_three_arms_and_anonymous_clients() -> None:
    exp = Experiment(
        name="e3",
        arms={"a": {"system": "x"}, "b": {"system": "y"}, "c": {"system": "z", "weight": 2}},  # type: ignore[dict-item]
    )
    shares = Counter(assign_arm(exp, str(i)) for i in range(10_000))
    assert [round(shares[a] / 10_000, 2) for a in "abc"] == pytest.approx([0.25, 0.25, 0.5], abs=0.02)
    rng = random.Random(0)
    anon = Counter(assign_arm(exp, None, rng=rng) for _ in range(10_000))
    assert abs(anon["c"] / 10_000 - 0.5) < 0.02


def test_route_and_shadow() -> None:
    exp = EXP.model_copy(update={"shadow": ["sys-c"]})
    r = route(exp, "u1")
    assert r.system == exp.arms[r.arm or ""].system and r.shadow == ["sys-c"]
    assert route(exp, "u1", promoted="sys-b") == ("b", "sys-b", [])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"name": "e", "arms": {"a": {"system": "x"}}}, "at least two arms"),
        ({"name": "e", "arms": {"a": {"system": "x", "weight": 0}, "b": {"system": "y"}}}, "greater than 0"),
        ({"name": "e", "arms": {"a": {"system": "x"}, "b": {"system": "y"}}, "shadow": ["x"]}, "already answer"),
        ({"name": "e", "arms": {"a": {"system": "x"}, "b": {"system": "y"}}, "stiky": "user"}, "Extra inputs"),
    ],
)
def test_experiment_validation(data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Experiment.model_validate(data)


def test_load_experiments(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "host: 0.0.0.0\nsystems: [whatever]\n"  # the server's keys: not ours to read
        "experiments:\n  - name: chat\n    arms: {a: {system: s1}, b: {system: s2, weight: 2}}\n    shadow: [s3]\n"
    )
    [exp] = load_experiments(path)
    assert exp.arms["b"].weight == 2 and exp.shadow == ["s3"] and exp.sticky == "user"
    path.write_text("experiments:\n  - name: chat\n    arms: {a: {system: s1}, b: {sytem: s2}}\n")
    with pytest.raises(ConfigError, match=r"serve.yaml: experiments\[0\].arms.b.sytem: Extra inputs"):
        load_experiments(path)
    path.write_text("experiments:\n" + "  - {name: e, arms: {a: {system: x}, b: {system: y}}}\n" * 2)
    with pytest.raises(ConfigError, match="listed twice: e"):
        load_experiments(path)
    assert load_experiments(_write(tmp_path / "empty.yaml", "host: x\n")) == []
    with pytest.raises(ConfigError, match="not found"):
        load_experiments(tmp_path / "missing.yaml")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- the report ------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "fb.sqlite")
    yield s
    s.close()


def served(store: SQLiteStore, arm: str | None, *, system: str | None = None, shadow: bool = False, **kw) -> str:
    rid = f"chatcmpl-{next(_ids)}"
    t = 1_700_000_000.0 + next(_ids)
    store.record_response(
        ResponseRecord(
            id=rid,
            created=t,
            model="exp",
            system=system or f"sys-{arm}",
            experiment="exp",
            arm=arm,
            shadow=shadow,
            request={"messages": [{"role": "user", "content": "q"}]},
            response="answer",
            latency_ms=kw.pop("latency_ms", 100.0),
            **kw,
        )
    )
    return rid


def thumbs(store: SQLiteStore, arm: str, ups: int, downs: int, **kw) -> None:
    for rating in ["up"] * ups + ["down"] * downs:
        store.record_feedback(FeedbackRecord(response_id=served(store, arm, **kw), rating=rating))  # type: ignore[arg-type]


def choices(store: SQLiteStore, winner: str, loser: str, n: int) -> None:
    for _ in range(n):
        w, lost = served(store, winner), served(store, loser)
        store.record_feedback(FeedbackRecord(response_id=lost, compare_to=w, choice="other"))


def test_report_decides_on_thumbs(store: SQLiteStore) -> None:
    thumbs(store, "a", 12, 18)
    thumbs(store, "b", 24, 6)
    store.record_response(  # a failed request: counted as an error, not as a rated response
        ResponseRecord(
            id="err",
            created=1.0,
            model="exp",
            system="sys-a",
            experiment="exp",
            arm="a",
            request={},
            response="",
            status=500,
            error="boom",
        )
    )
    report = ab_report(store, "exp")
    a, b = report.arms
    assert (a.arm, a.requests, a.errors, a.up, a.down) == ("a", 31, 1, 12, 18)
    assert (b.up_rate, b.up_rate_ci) == (0.8, wilson_interval(24, 30))
    assert report.decided and report.winner == "b"
    [c] = report.comparisons
    assert (c.metric, c.arm, c.other, round(c.estimate, 2)) == ("up_rate", "b", "a", 0.4)
    assert c.p_value == pytest.approx(fisher_p(24, 30, 12, 30)) and c.p_value < 0.01
    assert report.reason.startswith("arm b preferred: up-rate 0.80 vs 0.40 (a), difference 0.40 [")
    assert json.loads(json.dumps(as_json(report)))["winner"] == "b"


def test_report_too_small_and_not_significant(store: SQLiteStore) -> None:
    thumbs(store, "a", 6, 6)
    thumbs(store, "b", 20, 10)
    report = ab_report(store, "exp")
    assert not report.decided and report.winner is None
    assert report.reason == "too small to decide: arm a has 12 rated responses, 30 needed"
    thumbs(store, "a", 10, 8)  # a: 16/30 ... b: 20/30, not significant
    report = ab_report(store, "exp")
    assert not report.decided and report.reason.startswith("no significant difference yet: up-rate 0.67 vs 0.53")
    assert ab_report(store, "exp", min_samples=5).decided is False  # still not significant with a lower floor


def test_latest_rating_of_a_response_counts_once(store: SQLiteStore) -> None:
    rid = served(store, "a")
    for rating in ("down", "up", "up"):
        store.record_feedback(FeedbackRecord(response_id=rid, rating=rating))  # type: ignore[arg-type]
    served(store, "b")
    [a, _] = ab_report(store, "exp").arms
    assert (a.up, a.down) == (1, 0)


def test_report_decides_on_pairwise_and_ignores_shadow(store: SQLiteStore) -> None:
    choices(store, "b", "a", 32)
    choices(store, "a", "b", 8)
    ties = served(store, "a"), served(store, "b")
    store.record_feedback(FeedbackRecord(response_id=ties[0], compare_to=ties[1], choice="tie"))
    shadow = served(store, None, system="sys-s", shadow=True, latency_ms=900.0)
    store.record_feedback(FeedbackRecord(response_id=shadow, compare_to=ties[0], choice="this"))
    store.record_feedback(FeedbackRecord(response_id=shadow, rating="down"))
    report = ab_report(store, "exp")
    a, b = report.arms
    assert (b.pairwise_wins, b.pairwise_losses, b.pairwise_ties) == (32, 8, 1)
    assert (a.pairwise_wins, a.pairwise_losses, a.requests) == (8, 32, 41)  # the shadow win does not count
    [s] = report.shadow
    assert (s.system, s.requests, s.pairwise_wins, s.down, s.latency_p50_ms) == ("sys-s", 1, 1, 1, 900.0)
    [c] = report.comparisons
    assert c.metric == "pairwise" and c.estimate == 0.8 and c.p_value == pytest.approx(binomial_p(32, 40))
    assert report.decided and report.winner == "b"
    assert "wins 0.80 [" in report.reason and "of 40 pairwise choices against a" in report.reason


def test_conflicting_evidence_is_undecided(store: SQLiteStore) -> None:
    thumbs(store, "a", 25, 5)
    thumbs(store, "b", 8, 22)
    choices(store, "b", "a", 35)
    report = ab_report(store, "exp")
    assert not report.decided and report.reason.startswith("the evidence conflicts: up-rate prefers a; pairwise")


def test_three_arms_use_holm(store: SQLiteStore) -> None:
    thumbs(store, "a", 10, 20)
    thumbs(store, "b", 27, 3)
    thumbs(store, "c", 14, 16)
    exp3 = Experiment(name="exp", arms={k: {"system": f"sys-{k}"} for k in "abc"})  # type: ignore[misc]
    report = ab_report(store, exp3)
    assert [(c.arm, c.other) for c in report.comparisons] == [("b", "a"), ("b", "c")]
    assert all(c.p_adjusted >= c.p_value for c in report.comparisons)
    vs_a, vs_c = report.comparisons
    assert vs_a.p_value < vs_c.p_value  # c is closer to b: Holm doubles the smaller p, keeps the larger (or 2·p_a)
    assert vs_a.p_adjusted == pytest.approx(2 * vs_a.p_value)
    assert vs_c.p_adjusted == pytest.approx(max(2 * vs_a.p_value, vs_c.p_value))
    assert report.winner == "b" and "(Holm)" in report.reason


def test_configured_arms_without_traffic(store: SQLiteStore) -> None:
    thumbs(store, "a", 3, 1)
    report = ab_report(store, EXP)
    assert [a.arm for a in report.arms] == ["a", "b"] and report.arms[1].requests == 0
    assert report.reason == "too small to decide: fewer than two arms have responses"


def test_render_report(store: SQLiteStore) -> None:
    thumbs(store, "a", 12, 18)
    thumbs(store, "b", 24, 6, ttft_ms=20.0)
    served(store, None, system="sys-[red]s", shadow=True)
    console = Console(record=True, width=200)
    console.print(render_report(ab_report(store, "exp")))
    text = console.export_text()
    assert "arm b preferred" in text and "sys-[red]s" in text and "comparisons" in text


def test_promote(store: SQLiteStore) -> None:
    thumbs(store, "a", 5, 5)
    thumbs(store, "b", 6, 4)
    with pytest.raises(TailorError, match="cannot promote 'exp': too small to decide") as err:
        promote(store, EXP)
    assert "--arm" in (err.value.hint or "")
    assert promote(store, "exp", "a") == "sys-a"  # an operator's call; the System from the stored responses
    assert store.promoted("exp") == "sys-a"
    with pytest.raises(TailorError, match="came from arm 'z'"):
        promote(store, "exp", "z")
    with pytest.raises(ConfigError, match="no arm 'z'"):
        promote(store, EXP, "z")
    thumbs(store, "a", 5, 20)
    thumbs(store, "b", 24, 0)
    assert promote(store, EXP) == "sys-b"  # the winner
    assert store.promoted("exp") == "sys-b" and ab_report(store, "exp").promoted == "sys-b"
