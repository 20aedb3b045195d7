import pytest

from tailorlm.core.system import PromptSpec
from tailorlm.models.engines.base import Completion, GenerationParams, Usage
from tailorlm.prompting.answerer import build_requests, finalize, sampling_plan
from tailorlm.prompting.selection import count_tokens

pytestmark = pytest.mark.unit

DEMOS = [{"input": f"question number {i} " * 5, "output": f"answer {i}"} for i in range(6)]


def test_budget_drops_demonstrations_until_the_prompt_fits(tiny_tokenizer) -> None:
    full = build_requests(PromptSpec(few_shot=DEMOS), ["q?"])[0]
    budget = count_tokens(tiny_tokenizer, full) - 1  # one token too many for all six demonstrations
    trimmed = build_requests(PromptSpec(few_shot=DEMOS, max_prompt_tokens=budget), ["q?"], tiny_tokenizer)[0]
    assert count_tokens(tiny_tokenizer, trimmed) <= budget
    assert len(trimmed) == len(full) - 2  # exactly one (user, assistant) pair dropped: the last one
    assert trimmed[-2]["content"] == "answer 4"


def test_fixed_selection_and_cot_trigger() -> None:
    prompt = PromptSpec(few_shot=DEMOS, selection={"strategy": "fixed", "k": 2}, chain_of_thought="Think.")
    msgs = build_requests(prompt, ["q?"])[0]
    assert [m["content"] for m in msgs if m["role"] == "assistant"] == ["answer 0", "answer 1"]
    assert msgs[-1]["content"] == "q?\nThink."


def _c(text: str) -> Completion:
    return Completion(text=text, finish_reason="stop", usage=Usage(prompt_tokens=10, completion_tokens=3))


def test_self_consistency_votes_over_normalized_numbers() -> None:
    prompt = PromptSpec(answer={"method": "last_number"}, self_consistency={"n": 3, "temperature": 0.5})
    n, params = sampling_plan(prompt, GenerationParams())
    assert n == 3 and params.temperature == 0.5 and params.seed == 0
    answer = finalize(prompt, [_c("so 18.0 apples"), _c("The answer is 18."), _c("maybe 7")])
    assert answer.text == "18" and answer.agreement == pytest.approx(2 / 3)
    assert answer.usage == Usage(prompt_tokens=30, completion_tokens=9)
    assert answer.raw == "so 18.0 apples"


def test_no_program_passes_text_through() -> None:
    assert finalize(None, [_c("hello")]).text == "hello"
    assert sampling_plan(None, GenerationParams()) == (1, GenerationParams())
