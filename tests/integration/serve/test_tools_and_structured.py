"""Tools and structured output through the server and the official client: forced tool calls come back as OpenAI
`tool_calls` (plain and streamed) whose arguments validate; a tool result continues the conversation; a JSON schema
`response_format` gives JSON that validates. The tiny random model answers, so every valid output is the
constraint's doing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from serve_harness import make_state, serving
from tailorlm.core.system import System

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    # Sampled, so that without the constraint the random model would write anything at all.
    system = System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 48, "temperature": 1.0})
    state = make_state([system], tmp_path_factory.mktemp("tools"), limits={"max_tokens": 128})
    with serving(state) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


def _valid_call(call: Any) -> None:
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_required_tool_call_validates(client: openai.OpenAI) -> None:
    complete = 0
    for seed in range(3):
        r = client.chat.completions.create(
            model="tiny", messages=MESSAGES, tools=[WEATHER], tool_choice="required", seed=seed,
            parallel_tool_calls=False, max_tokens=96,
        )  # fmt: skip
        choice = r.choices[0]
        if choice.finish_reason == "length":
            continue  # cut by the token budget: a valid prefix, not a whole call
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
        _valid_call(choice.message.tool_calls[0])
        complete += 1
    assert complete >= 1, "no answer finished within the token budget"


def test_named_function_and_streamed_calls(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny", messages=MESSAGES, tools=[WEATHER], max_tokens=96, stream=True, seed=1,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    calls, finish = [], None
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta and delta.tool_calls:
            calls.extend(delta.tool_calls)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    if finish != "length":
        assert finish == "tool_calls" and len(calls) == 1
        _valid_call(calls[0])


def test_tool_result_continues_the_conversation(client: openai.OpenAI) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    r = client.chat.completions.create(
        model="tiny", tools=[WEATHER], max_tokens=8,
        messages=[*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}],
    )  # fmt: skip
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 10}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=96, seed=0,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )  # fmt: skip
    if r.choices[0].finish_reason != "length":
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "not_there"}},
        )  # fmt: skip
