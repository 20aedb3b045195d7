"""Verdict parsing, the two-order consistency rule, summaries and agreement statistics: pure, milliseconds.

A fake in-process engine checks the batching and the swap without a model; the same logic runs over a real
HTTP server and real models in tests/integration/test_judge_engines.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tailorlm.errors import DataError, TailorError
from tailorlm.eval.judge import (
    PairwiseVerdict,
    combine_orders,
    judge_pairwise,
    judge_single,
    load_template,
    parse_pairwise_verdict,
    parse_rating,
    summarize_pairwise,
)
from tailorlm.eval.judge_agreement import (
    LabelledPair,
    agreement,
    cohen_kappa,
    debiased_winners,
    first_position_winners,
    length_winners,
    load_alpaca_eval_annotations,
    sample_pairs,
)
from tailorlm.models.engines.base import Completion, GenerationParams, Request, Usage

pytestmark = pytest.mark.unit


# --- parsing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Assistant A is more detailed. [[A]]", "A"),
        ("Final verdict: [[B]]", "B"),
        ("Both are fine. [[C]]", "tie"),
        ("[[tie]]", "tie"),
        ("[[ b ]]", "B"),
        # The judge quotes the format first; the last bracketed verdict is its own.
        ('I must answer "[[A]]" if A is better or "[[B]]" if B is better. My verdict: [[B]]', "B"),
        ("A", "A"),
        ("b.", "B"),
        ("Output (a)", "A"),  # AlpacaEval's format
        ("Output (b)\n\nIt is more complete.", "B"),
        ("(A)", "A"),
        ("Assistant B", "B"),
        ("Verdict: A", "A"),
        ("The better response is B because it is accurate.", "B"),
        ("Assistant A is better.", "A"),
        ("I prefer Output (b).", "B"),
        ("It is a tie.", "tie"),
        ("The winner is a tie", "tie"),  # lower-case "a" is an article, not a verdict
        ("", "invalid"),
        ("I cannot decide between them.", "invalid"),
        ("Assistant A is better at style, but Assistant B is better at facts.", "invalid"),
        ("Rating: [[7]]", "invalid"),
    ],
)
def test_parse_pairwise_verdict(text: str, expected: str) -> None:
    assert parse_pairwise_verdict(text) == expected


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [
        ("Good answer. Rating: [[7]]", 10, 7.0),
        ("Rating: [[8.5]]", 10, 8.5),
        ("Rating: [ 6 ]", 10, 6.0),  # MT-Bench's backup pattern
        ("Rating: 4", 10, 4.0),
        ("I give it 9/10.", 10, 9.0),
        ('Format "[[5]]". Rating: [[3]]', 10, 3.0),  # the last one wins
        ("Rating: [[11]]", 10, None),  # off the scale
        ("Rating: [[0]]", 10, None),
        ("Rating: [[4]]", 3, None),
        ("No rating here.", 10, None),
    ],
)
def test_parse_rating(text: str, scale: int, expected: float | None) -> None:
    assert parse_rating(text, scale) == expected


# --- consistency ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        ("A", "B", "a"),  # a wins in slot A, then again in slot B
        ("B", "A", "b"),
        ("tie", "tie", "tie"),
        ("A", "A", "inconsistent"),  # always the first slot: position bias
        ("B", "B", "inconsistent"),
        ("A", "tie", "inconsistent"),  # MT-Bench: a win and a tie do not agree
        ("invalid", "A", "invalid"),
        ("B", "invalid", "invalid"),
    ],
)
def test_combine_orders(first: str, second: str, winner: str) -> None:
    assert combine_orders(first, second) == winner  # type: ignore[arg-type]


def _v(first: str, second: str, margins: tuple[float, float] | None = None) -> PairwiseVerdict:
    return PairwiseVerdict(combine_orders(first, second), first, second, ("", ""), margins)  # type: ignore[arg-type]


def test_summarize_pairwise_rates_sum_to_one() -> None:
    verdicts = [_v("A", "B"), _v("A", "B"), _v("B", "A"), _v("tie", "tie"), _v("A", "A"), _v("invalid", "A")]
    s = summarize_pairwise(verdicts)
    assert s["n"] == 6
    assert s["win_rate_a"] == pytest.approx(2 / 6)
    assert s["win_rate_b"] == pytest.approx(1 / 6)
    assert s["tie_rate"] == pytest.approx(1 / 6)
    assert s["consistency"] == pytest.approx(4 / 6)
    assert s["inconsistent_rate"] == pytest.approx(1 / 6)
    assert s["invalid_rate"] == pytest.approx(1 / 6)
    parts = ("win_rate_a", "win_rate_b", "tie_rate", "inconsistent_rate", "invalid_rate")
    assert sum(s[k] for k in parts) == pytest.approx(1.0)


def test_summarize_empty() -> None:
    assert summarize_pairwise([])["n"] == 0
    assert summarize_pairwise([])["consistency"] == 0.0


def test_margin_cancels_a_constant_slot_bias() -> None:
    # A judge that adds +2 to whatever sits in slot A, and truly prefers output_b by 0.5:
    # order 1 (a in slot A): 2 - 0.5; order 2 (b in slot A): 2 + 0.5.
    v = _v("A", "A", margins=(1.5, 2.5))
    assert v.winner == "inconsistent"
    assert v.margin == pytest.approx(-0.5)
    assert debiased_winners([v, _v("A", "B")]) == ["b", "invalid"]


# --- a fake engine: batching and the swap -----------------------------------------------------------------


class EchoJudge:
    """Answers "[[A]]" when the text shown as Assistant A contains ``good``, else "[[B]]"; records each batch."""

    name = "echo"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def generate(self, requests: Sequence[object], params: GenerationParams | None = None) -> list[Completion]:
        prompts = [Request.of(r).messages[-1]["content"] for r in requests]  # type: ignore[arg-type,index]
        self.batches.append(prompts)
        out = []
        for p in prompts:
            a_text = p.split("[The Start of Assistant A's Answer]")[1].split("[The End of Assistant A's Answer]")[0]
            out.append(Completion(text="[[A]]" if "good" in a_text else "[[B]]", finish_reason="stop", usage=Usage()))
        return out

    def stream(self, request: object, params: GenerationParams | None = None):  # pragma: no cover - unused
        raise NotImplementedError


def test_judge_pairwise_swaps_and_batches_once() -> None:
    engine = EchoJudge()
    items = [
        {"instruction": "q1", "output_a": "good answer", "output_b": "poor answer"},
        {"instruction": "q2", "output_a": "poor answer", "output_b": "good answer"},
        {"instruction": "q3", "output_a": "good one", "output_b": "good two"},  # the judge picks slot A: biased
    ]
    verdicts = judge_pairwise(engine, items)
    assert len(engine.batches) == 1 and len(engine.batches[0]) == 6  # every prompt in one call
    first, swapped = engine.batches[0][0], engine.batches[0][1]
    assert first.index("good answer") < first.index("poor answer")
    assert swapped.index("poor answer") < swapped.index("good answer")
    assert [v.winner for v in verdicts] == ["a", "b", "inconsistent"]
    assert verdicts[0].raw == ("[[A]]", "[[B]]")
    assert judge_pairwise(engine, []) == []


def test_output_cut_without_tokenizer_uses_characters() -> None:
    engine = EchoJudge()
    judge_pairwise(engine, [{"instruction": "q", "output_a": "x" * 100, "output_b": "y"}], max_output_tokens=5)
    assert "x" * 20 in engine.batches[0][0] and "x" * 21 not in engine.batches[0][0]  # 5 tokens ~ 20 characters


def test_bad_items_and_modes_are_user_errors() -> None:
    with pytest.raises(TailorError, match="item 1 has no string field 'output_a', 'output_b'"):
        judge_pairwise(EchoJudge(), [{"instruction": "q", "output_a": "a", "output_b": "b"}, {"instruction": "q"}])
    with pytest.raises(TailorError, match="logprob"):
        judge_pairwise(EchoJudge(), [{"instruction": "q", "output_a": "a", "output_b": "b"}], mode="logprob")
    with pytest.raises(TailorError, match="unknown judge mode"):
        judge_single(EchoJudge(), [{"instruction": "q", "output": "a"}], mode="vibes")  # type: ignore[arg-type]


# --- templates --------------------------------------------------------------------------------------------


def test_packaged_templates_follow_mt_bench() -> None:
    pair = load_template(None, "pairwise.jinja").render(
        instruction="Q?", output_a="FIRST-OUT", output_b="SECOND-OUT", reference=None, logprob=False
    )
    assert '"[[A]]" if assistant A is better' in pair and "[[C]]" in pair
    assert pair.index("FIRST-OUT") < pair.index("SECOND-OUT") and "Reference" not in pair
    with_ref = load_template(None, "pairwise.jinja").render(
        instruction="Q?", output_a="one", output_b="two", reference="REF", logprob=True
    )
    assert "REF" in with_ref and "[[C]]" not in with_ref  # logprob mode is a forced choice
    single = load_template(None, "single.jinja").render(
        instruction="Q?", output="ans", reference=None, scale=5, logprob=False
    )
    assert "scale of 1 to 5" in single and "Rating: [[3]]" in single


def test_user_template(tmp_path: Path) -> None:
    path = tmp_path / "mine.jinja"
    path.write_text("Q: {{ instruction }} A) {{ output_a }} B) {{ output_b }} {{ nope }}")
    engine = EchoJudge()
    with pytest.raises(TailorError, match="unknown variable"):
        judge_pairwise(engine, [{"instruction": "q", "output_a": "a", "output_b": "b"}], template=path)
    with pytest.raises(TailorError, match="not found"):
        load_template(tmp_path / "missing.jinja", "pairwise.jinja")
    (tmp_path / "broken.jinja").write_text("{% if %}")
    with pytest.raises(TailorError, match="line 1"):
        load_template(tmp_path / "broken.jinja", "pairwise.jinja")


# --- agreement --------------------------------------------------------------------------------------------


def test_cohen_kappa_hand_computed() -> None:
    # 10 items; judge x vs label y agree on 6: p_o = 0.6.
    x = ["a", "a", "a", "a", "a", "b", "b", "b", "a", "b"]
    y = ["a", "a", "a", "a", "b", "b", "b", "a", "b", "a"]
    # Marginals: both have a=6, b=4, so p_e = (6*6 + 4*4) / 100 = 0.52 and kappa = (0.6 - 0.52) / 0.48 = 1/6.
    assert sum(i == j for i, j in zip(x, y, strict=True)) / 10 == pytest.approx(0.6)
    assert cohen_kappa(x, y) == pytest.approx(1 / 6)
    assert cohen_kappa(["a"] * 4, ["a"] * 4) is None  # chance agreement is 1: undefined
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)


def test_agreement_counts_inconsistent_as_wrong() -> None:
    winners = ["a", "b", "inconsistent", "invalid", "a"]
    labels = ["a", "a", "b", "a", "a"]
    r = agreement(winners, labels, first=["A", "B", "A", "invalid", "A"])  # type: ignore[arg-type]
    assert r["n"] == 5
    assert r["agreement"] == pytest.approx(2 / 5)
    assert r["agreement_consistent"] == pytest.approx(2 / 3)
    assert r["consistency"] == pytest.approx(3 / 5)
    assert r["position_bias"] == pytest.approx(3 / 4)
    assert agreement(["inconsistent"], ["a"])["agreement_consistent"] is None


def test_trivial_judges() -> None:
    items = [
        {"output_a": "long answer", "output_b": "short"},
        {"output_a": "x", "output_b": "longer"},
        {"output_a": "same", "output_b": "size"},
    ]
    assert length_winners(items) == ["a", "b", "tie"]
    assert first_position_winners(items) == ["a", "a", "a"]


def _annotations(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(records))
    return path


def test_load_alpaca_eval_annotations(tmp_path: Path) -> None:
    base = {"instruction": "q", "output_1": "one", "output_2": "two"}
    path = _annotations(
        tmp_path,
        [
            {**base, "preference": 2},
            {**base, "preference": 1},
            {**base, "preference": 1.5},
            {**base, "preference": [1, 2, 2]},  # per-annotator: the mean leans to 2
            {**base, "preference": 0},  # no preference recorded
            {**base, "preference": None},
            {"instruction": "q", "output_1": "same", "output_2": "same", "preference": 1},  # nothing to judge
        ],
    )
    pairs = load_alpaca_eval_annotations(path)
    assert [p.preference for p in pairs] == [2.0, 1.0, 1.5, 2.0]
    with pytest.raises(DataError, match="annotation 0 has no field 'preference'"):
        load_alpaca_eval_annotations(_annotations(tmp_path, [base]))
    with pytest.raises(DataError, match="not found"):
        load_alpaca_eval_annotations(tmp_path / "nope.json")


def test_sample_pairs_labels_follow_the_coin_flip() -> None:
    pairs = [LabelledPair(f"q{i}", f"one{i}", f"two{i}", 2) for i in range(40)] + [
        LabelledPair("qt", "one-t", "two-t", 1.5)
    ]
    items = sample_pairs(pairs, 41, seed=3)
    assert items == sample_pairs(pairs, 41, seed=3)  # fixed by the seed
    assert len(items) == 41 and len({it["instruction"] for it in items}) == 41
    for it in items:
        if it["label"] == "tie":
            assert it["instruction"] == "qt"
        else:  # output_2 (the "two..." text) was preferred, wherever it landed
            assert it[f"output_{it['label']}"].startswith("two")
    slots = [it["label"] for it in items if it["label"] != "tie"]
    assert 0 < slots.count("a") < 40  # both slots are used
    assert len(sample_pairs(pairs, 5, seed=0)) == 5
