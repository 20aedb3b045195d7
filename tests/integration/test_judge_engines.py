"""The judge through real engines: an OpenAI-protocol HTTP server with canned verdicts, and a tiny HF model.

The stub answers each judge prompt with a verdict chosen by the test, so the swap logic is proven end to end:
the prompt for order 2 must really hold the outputs swapped, or the canned answers would not be found.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from openai_stub import OpenAIStub
from tailorlm.errors import TailorError
from tailorlm.eval.judge import judge_pairwise, judge_single, load_template, summarize_pairwise
from tailorlm.models.engines.base import GenerationParams
from tailorlm.models.engines.hf import HFEngine
from tailorlm.models.engines.openai import OpenAIEngine

pytestmark = pytest.mark.integration

VERDICTS = {"a", "b", "tie", "inconsistent", "invalid"}
ORDER_VERDICTS = {"A", "B", "tie", "invalid"}


def _prompt(instruction: str, shown_a: str, shown_b: str) -> str:
    """The user message the judge receives (the stub keys its answers on it)."""
    tmpl = load_template(None, "pairwise.jinja")
    return tmpl.render(instruction=instruction, output_a=shown_a, output_b=shown_b, reference=None, logprob=False)


# (item, answer to order 1 (a, b), answer to order 2 (b, a), expected winner)
CASES = [
    ("Name a prime.", "7 is prime.", "Nine.", "Assistant A is right. [[A]]", "Assistant B is right. [[B]]", "a"),
    ("Capital of Peru?", "Quito.", "Lima.", "[[B]]", "Output (a)", "b"),  # a loose verdict in order 2
    ("Say hi.", "Hi!", "Hello!", "Both fine. [[C]]", "[[C]]", "tie"),
    ("2+2?", "4", "four", "[[A]]", "[[A]]", "inconsistent"),  # prefers slot A whatever is in it
    ("Spell cat.", "cat", "c-a-t", "[[A]]", "I cannot decide.", "invalid"),
]


def test_pairwise_swap_through_http() -> None:
    answers = {}
    items = []
    for instruction, out_a, out_b, first, second, _ in CASES:
        answers[_prompt(instruction, out_a, out_b)] = first
        answers[_prompt(instruction, out_b, out_a)] = second
        items.append({"instruction": instruction, "output_a": out_a, "output_b": out_b})
    with OpenAIStub(answers=answers) as stub:
        engine = OpenAIEngine("stub-model", base_url=stub.base_url, concurrency=4)
        verdicts = judge_pairwise(engine, items, params=GenerationParams(max_new_tokens=64))
        assert len(stub.requests) == 2 * len(CASES)
        assert all(r.body is not None and r.body["temperature"] == 0.0 for r in stub.requests)  # greedy judge

    assert [v.winner for v in verdicts] == [c[-1] for c in CASES]
    assert verdicts[1].first == "B" and verdicts[1].second == "A" and verdicts[1].raw == ("[[B]]", "Output (a)")
    summary = summarize_pairwise(verdicts)
    assert summary == {
        "win_rate_a": 0.2,
        "win_rate_b": 0.2,
        "tie_rate": 0.2,
        "consistency": pytest.approx(0.6),
        "inconsistent_rate": 0.2,
        "invalid_rate": 0.2,
        "n": 5,
    }


def test_single_grading_through_http() -> None:
    tmpl = load_template(None, "single.jinja")
    items = [{"instruction": "Name a prime.", "output": "7"}, {"instruction": "Name a prime.", "output": "9"}]
    answers = {
        tmpl.render(instruction="Name a prime.", output="7", reference=None, scale=10, logprob=False): "Rating: [[9]]",
        tmpl.render(instruction="Name a prime.", output="9", reference=None, scale=10, logprob=False): "Wrong.",
    }
    with OpenAIStub(answers=answers) as stub:
        engine = OpenAIEngine("stub-model", base_url=stub.base_url)
        grades = judge_single(engine, items)
    assert grades == [{"score": 9.0, "raw": "Rating: [[9]]"}, {"score": None, "raw": "Wrong."}]


def test_logprob_mode_needs_a_local_model() -> None:
    with OpenAIStub() as stub:
        engine = OpenAIEngine("stub-model", base_url=stub.base_url)
        with pytest.raises(TailorError, match="HFEngine"):
            judge_pairwise(engine, [{"instruction": "q", "output_a": "a", "output_b": "b"}], mode="logprob")
        with pytest.raises(TailorError, match="HFEngine"):
            judge_single(engine, [{"instruction": "q", "output": "a"}], mode="logprob")
        assert stub.requests == []  # refused before any request


# --- a tiny random HF model -------------------------------------------------------------------------------

# The tiny model's window is 512 positions and its toy tokenizer spends about a token per character, so the
# packaged MT-Bench prompt does not fit: a short template (also exercising user templates) does.
SHORT_PAIRWISE = "Q: {{ instruction }}\nA: {{ output_a }}\nB: {{ output_b }}\nBetter, A or B?"
SHORT_SINGLE = "Q: {{ instruction }}\nAnswer: {{ output }}\nRate it 1 to {{ scale }}."

TINY_ITEMS = [
    {"instruction": "What is the capital of France?", "output_a": "Paris.", "output_b": "Rome, I think."},
    {"instruction": "Two plus two?", "output_a": "four", "output_b": "The answer is four. " * 40},  # cut to fit
    {"instruction": "Say hello.", "output_a": "hello, world!", "output_b": "hi", "reference": "hello"},
]


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir: Path) -> HFEngine:
    return HFEngine(str(tiny_model_dir), batch_size=8)


@pytest.fixture
def templates(tmp_path: Path) -> tuple[Path, Path]:
    pair, single = tmp_path / "pair.jinja", tmp_path / "single.jinja"
    pair.write_text(SHORT_PAIRWISE)
    single.write_text(SHORT_SINGLE)
    return pair, single


@pytest.mark.parametrize("mode", ["generate", "logprob"])
def test_tiny_hf_pairwise_both_modes(tiny_engine: HFEngine, templates: tuple[Path, Path], mode: str) -> None:
    verdicts = judge_pairwise(
        tiny_engine,
        TINY_ITEMS,
        template=templates[0],
        mode=mode,  # type: ignore[arg-type]
        max_output_tokens=48,
        params=GenerationParams(max_new_tokens=8),
    )
    assert len(verdicts) == len(TINY_ITEMS)
    for v in verdicts:
        assert v.winner in VERDICTS and v.first in ORDER_VERDICTS and v.second in ORDER_VERDICTS
        assert len(v.raw) == 2
        if mode == "logprob":
            assert v.margins is not None and all(isinstance(m, float) for m in v.margins)
            assert v.first != "invalid" and v.second != "invalid"  # logprob mode always decides
        else:
            assert v.margins is None


def test_tiny_hf_logprob_batching_does_not_change_margins(tiny_model_dir: Path, templates: tuple[Path, Path]) -> None:
    # Rows of different lengths are left-padded together; explicit position ids keep each row's numbers.
    batched = judge_pairwise(
        HFEngine(str(tiny_model_dir), batch_size=8), TINY_ITEMS, template=templates[0], mode="logprob"
    )
    alone = judge_pairwise(
        HFEngine(str(tiny_model_dir), batch_size=1), TINY_ITEMS, template=templates[0], mode="logprob"
    )
    for x, y in zip(batched, alone, strict=True):
        assert x.margins == pytest.approx(y.margins, abs=1e-4)


@pytest.mark.parametrize("mode", ["generate", "logprob"])
@pytest.mark.parametrize("scale", [10, 5])
def test_tiny_hf_single_both_modes(tiny_engine: HFEngine, templates: tuple[Path, Path], mode: str, scale: int) -> None:
    items = [{"instruction": it["instruction"], "output": it["output_b"]} for it in TINY_ITEMS]
    grades = judge_single(
        tiny_engine,
        items,
        scale=scale,
        template=templates[1],
        mode=mode,  # type: ignore[arg-type]
        max_output_tokens=48,
        params=GenerationParams(max_new_tokens=8),
    )
    assert len(grades) == len(items)
    for g in grades:
        assert isinstance(g["raw"], str)
        if mode == "logprob":
            # The expected rating under a distribution over 1..scale (two-step for "10": "1" then "0").
            assert g["score"] is not None and 1.0 <= g["score"] <= scale
            assert len(g["probs"]) == scale and sum(g["probs"]) == pytest.approx(1.0)
        else:
            assert g["score"] is None or 1 <= g["score"] <= scale


def test_prompt_that_cannot_fit_the_window_is_a_user_error(tiny_engine: HFEngine) -> None:
    # The packaged MT-Bench prompt alone exceeds the tiny model's 512 positions (see above).
    with pytest.raises(TailorError, match="context window"):
        judge_pairwise(tiny_engine, TINY_ITEMS[:1], mode="logprob")


class RecordingEngine:
    """Delegates to an HFEngine and records the token length of every prompt it is asked to answer."""

    def __init__(self, engine: HFEngine) -> None:
        self.inner, self.model, self.tokenizer, self.name = engine, engine.model, engine.tokenizer, engine.name
        self.lengths: list[int] = []

    def render(self, request):  # type: ignore[no-untyped-def]
        return self.inner.render(request)

    def generate(self, requests, params=None):  # type: ignore[no-untyped-def]
        self.lengths += [len(self.tokenizer(self.render(r), add_special_tokens=False)["input_ids"]) for r in requests]
        return self.inner.generate(requests, params)


def test_long_answers_are_cut_to_fit_the_window(tiny_engine: HFEngine, templates: tuple[Path, Path]) -> None:
    engine = RecordingEngine(tiny_engine)
    long_item = {"instruction": "Two plus two?", "output_a": "four " * 300, "output_b": "The answer is four. " * 80}
    verdicts = judge_pairwise(engine, [long_item], template=templates[0], params=GenerationParams(max_new_tokens=8))
    assert len(verdicts) == 1 and len(engine.lengths) == 2
    window = tiny_engine.model.config.max_position_embeddings
    assert all(window - 64 < n <= window - 8 for n in engine.lengths)  # shrunk to fit, not cut to nothing
