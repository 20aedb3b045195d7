from collections.abc import Iterator, Sequence

import pytest

from tailorlm.models.engines.base import (
    Completion,
    Engine,
    GenerationParams,
    Message,
    Request,
    StreamChunk,
    Usage,
    truncate_at_stop,
)
from tailorlm.prompting.react import REACT_INSTRUCTIONS, ReactStep, parse_react_step, render_react_system, run_react

pytestmark = pytest.mark.unit

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current temperature in a city, in Celsius.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


# -- parsing -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Paris"}\n',
            ReactStep("I need the weather.", "get_weather", {"city": "Paris"}, None),
        ),
        (  # lower case, odd spacing, the "Thought:" label left out (the prompt may already end with it)
            ' I should look it up.\naction :  get_weather\naction input:{"city":"Oslo"}',
            ReactStep("I should look it up.", "get_weather", {"city": "Oslo"}, None),
        ),
        (  # a plain-string input
            "Thought: search\nAction: search\nAction Input: capital of France",
            ReactStep("search", "search", "capital of France", None),
        ),
        (
            'Thought: t\nAction: `get_weather`\nAction Input:\n```json\n{"city": "Rome"}\n```',
            ReactStep("t", "get_weather", {"city": "Rome"}, None),
        ),
        (  # JSON followed by chatter, and a quoted JSON string
            'Action: get_weather\nAction Input: {"city": "Lima"} (checking now)',
            ReactStep(None, "get_weather", {"city": "Lima"}, None),
        ),
        ('Action: search\nAction Input: "Paris"', ReactStep(None, "search", "Paris", None)),
        (  # Yao et al.'s numbered, bracketed form
            "Thought 1: I need to search Apple Remote.\nAction 1: Search[Apple Remote]",
            ReactStep("I need to search Apple Remote.", "Search", "Apple Remote", None),
        ),
        (
            "Thought 3: So the answer is yes.\nAction 3: Finish[yes]",
            ReactStep("So the answer is yes.", None, None, "yes"),
        ),
        (
            "Thought: I now know the final answer\nFinal Answer: 21 degrees,\nwith light rain.",
            ReactStep("I now know the final answer", None, None, "21 degrees,\nwith light rain."),
        ),
        ("FINAL_ANSWER: 42", ReactStep(None, None, None, "42")),
        ("I am not sure what to do.", ReactStep("I am not sure what to do.", None, None, None)),
        ("", ReactStep(None, None, None, None)),
    ],
)
def test_parse_react_step(text: str, expected: ReactStep) -> None:
    assert parse_react_step(text) == expected


def test_when_action_and_final_answer_both_appear_the_first_wins() -> None:
    premature = parse_react_step('Action: get_weather\nAction Input: {"city": "Oslo"}\nFinal Answer: 5 degrees')
    assert (premature.action, premature.final_answer) == ("get_weather", None)
    rambling = parse_react_step("Final Answer: 5\nThought: more\nAction: get_weather")
    assert (rambling.action, rambling.final_answer) == (None, "5")


def test_system_prompt_lists_tools_with_their_arguments() -> None:
    system = render_react_system([WEATHER, {"name": "now", "description": "The time.", "parameters": {}}])
    assert "- get_weather: Current temperature in a city, in Celsius." in system
    assert '"required": ["city"]' in system
    assert "one of [get_weather, now]" in system
    assert "Final Answer:" in system and "Observation:" in system
    assert "{tools}" in REACT_INSTRUCTIONS
    assert "no tools" in render_react_system([])


# -- the loop, driven by a scripted model ----------------------------------------------------------------------
class ScriptedEngine:
    """A test double for a model: returns the next scripted turn and records the conversation it was shown.

    Like a real engine, it cuts its text at the first stop string, so a script that runs on into a made-up
    "Observation:" shows what the loop actually receives.
    """

    name = "scripted"

    def __init__(self, turns: list[str]) -> None:
        self.turns = list(turns)
        self.seen: list[list[Message]] = []
        self.params: list[GenerationParams] = []

    def generate(
        self, requests: Sequence[str | Sequence[Message] | Request], params: GenerationParams | None = None
    ) -> list[Completion]:
        params = params or GenerationParams()
        out = []
        for request in requests:
            self.seen.append(list(Request.of(request).messages or []))
            self.params.append(params)
            text, _ = truncate_at_stop(self.turns.pop(0), params.stop)
            out.append(Completion(text=text, finish_reason="stop", usage=Usage(prompt_tokens=50, completion_tokens=7)))
        return out

    def stream(
        self, request: str | Sequence[Message] | Request, params: GenerationParams | None = None
    ) -> Iterator[StreamChunk]:
        raise NotImplementedError


def get_weather(city: str) -> str:
    """Current temperature in a city."""
    return {"Paris": "21 C, light rain"}.get(city, "unknown city")


def test_scripted_engine_is_an_engine() -> None:
    assert isinstance(ScriptedEngine([]), Engine)


def test_loop_calls_the_tool_and_feeds_the_observation_back() -> None:
    engine = ScriptedEngine(
        [
            # The model invents an observation; the stop string cuts it off before the loop sees it.
            'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Paris"}\nObservation: 35 C',
            "Thought: I now know the final answer\nFinal Answer: 21 C with light rain.",
        ]
    )
    result = run_react(engine, "How warm is Paris?", {"get_weather": get_weather}, tool_schemas=[WEATHER])
    assert result.answer == "21 C with light rain."
    assert result.stopped_reason == "final_answer"
    assert [obs for _, obs in result.steps] == ["21 C, light rain", None]
    assert result.steps[0][0].action_input == {"city": "Paris"}
    assert result.usage == Usage(prompt_tokens=100, completion_tokens=14)
    assert all("Observation:" in p.stop for p in engine.params)

    first, second = engine.seen
    assert [m["role"] for m in first] == ["system", "user"]
    assert "get_weather" in first[0]["content"] and first[1]["content"] == "Question: How warm is Paris?"
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert "35 C" not in second[2]["content"]
    assert second[3]["content"] == "Observation: 21 C, light rain"
    # Tool output is data: it never reaches the system prompt.
    assert second[0]["content"] == first[0]["content"]


def test_unknown_tools_and_failing_tools_become_observations() -> None:
    def broken(city: str) -> str:
        raise RuntimeError("service down")

    engine = ScriptedEngine(
        [
            "Action: search\nAction Input: Paris weather",
            'Action: get_weather\nAction Input: {"town": "Paris"}',  # wrong argument name
            'Action: broken\nAction Input: {"city": "Paris"}',
            "Final Answer: I could not find out.",
        ]
    )
    result = run_react(engine, "q", {"get_weather": get_weather, "broken": broken}, max_steps=5)
    observations = [obs for _, obs in result.steps]
    assert observations[0] == "error: unknown tool search (available: get_weather, broken)"
    assert observations[1] is not None and observations[1].startswith("error: TypeError")
    assert observations[2] == "error: RuntimeError: service down"
    assert result.answer == "I could not find out."
    assert result.stopped_reason == "final_answer"


def test_a_turn_without_action_or_answer_gets_a_format_hint() -> None:
    engine = ScriptedEngine(["Hmm, let me think.", "Final Answer: 4"])
    result = run_react(engine, "2+2?", {})
    assert result.steps[0][1] is not None and result.steps[0][1].startswith("error: no Action or Final Answer")
    assert result.answer == "4"


def test_max_steps_stops_the_loop() -> None:
    engine = ScriptedEngine(['Action: get_weather\nAction Input: {"city": "Paris"}'] * 3)
    result = run_react(engine, "q", {"get_weather": get_weather}, max_steps=2)
    assert result.stopped_reason == "max_steps"
    assert result.answer is None
    assert len(result.steps) == 2 and len(engine.turns) == 1


def test_plain_string_input_is_the_positional_argument_and_docstrings_describe_tools() -> None:
    engine = ScriptedEngine(["Action: get_weather\nAction Input: Paris", "Final Answer: ok"])
    result = run_react(engine, "q", {"get_weather": get_weather})
    assert result.steps[0][1] == "21 C, light rain"
    assert "- get_weather: Current temperature in a city." in engine.seen[0][0]["content"]


def test_schemas_for_missing_tools_are_a_config_error() -> None:
    with pytest.raises(ValueError, match="get_weather"):
        run_react(ScriptedEngine([]), "q", {}, tool_schemas=[WEATHER])
