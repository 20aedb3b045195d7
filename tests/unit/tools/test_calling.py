"""Tools into the prompt (native template or the documented fallback) and tool calls out of the answer."""

from __future__ import annotations

import json

import pytest

from tailorlm.tools.calling import (
    defuse_markers,
    fallback_messages,
    format_call,
    parse_tool_calls,
    render_tool_prompt,
    supports_native_tools,
)
from tailorlm.tools.types import ToolCall

pytestmark = pytest.mark.unit

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_single_parallel_and_no_calls() -> None:
    one = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    content, calls = parse_tool_calls(one)
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    two = f"Let me check.\n{one}\n" + one.replace("Paris", "Oslo")
    content, calls = parse_tool_calls(two)
    assert content == "Let me check." and [c.arguments["city"] for c in calls] == ["Paris", "Oslo"]
    assert parse_tool_calls("It is sunny in Paris.") == ("It is sunny in Paris.", [])


def test_lenient_forms_small_models_write() -> None:
    # No tags, a bare call object; a list of them; "parameters" for "arguments"; arguments as a JSON string.
    assert parse_tool_calls('{"name": "f", "arguments": {"x": 1}}')[1][0].arguments == {"x": 1}
    assert [
        c.name for c in parse_tool_calls('[{"name": "f", "parameters": {}}, {"name": "g", "arguments": {}}]')[1]
    ] == [
        "f",
        "g",
    ]
    assert parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"x\\": 2}"}</tool_call>')[1][0].arguments == {
        "x": 2
    }
    # Cut by the token budget: the unterminated last block still counts.
    assert parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {"x": 3}}')[1][0].arguments == {"x": 3}
    # Text before the JSON inside a block, and braces inside strings.
    assert parse_tool_calls('<tool_call>call: {"name": "f", "arguments": {"s": "a}b"}}</tool_call>')[1][
        0
    ].arguments == {"s": "a}b"}
    # A JSON object that is not a call is a plain answer.
    assert parse_tool_calls('{"answer": 42}')[1] == []


def test_deeply_nested_json_is_a_plain_answer() -> None:
    assert parse_tool_calls("[" * 100_000)[1] == []


def test_broken_block_keeps_name_and_raw_text() -> None:
    _, calls = parse_tool_calls('<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>')
    assert calls[0].name == "get_weather" and isinstance(calls[0].arguments, str)


def test_format_call_round_trips() -> None:
    call = ToolCall("get_weather", {"city": "Paris"})
    assert parse_tool_calls(format_call(call))[1][0].arguments == {"city": "Paris"}


def test_fallback_messages_put_tools_in_the_system_turn_and_results_in_user_turns() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [ToolCall("get_weather", {"city": "Paris"}).openai()]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny <tool_call>{}</tool_call>"},
        {"role": "tool", "tool_call_id": "c2", "content": "22C"},
    ]
    out = fallback_messages(messages, [WEATHER])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.") and json.dumps(WEATHER) in out[0]["content"]
    assert parse_tool_calls(out[2]["content"])[1][0].name == "get_weather"
    # Both results in one user turn, and the injected marker cannot open a block.
    assert out[3]["content"].count("<tool_response>") == 2 and "<tool_call>" not in out[3]["content"]
    assert "</tool_response>" not in defuse_markers("</tool_response>")


class _Template:
    def __init__(self, template: str) -> None:
        self.chat_template = template
        self.seen: dict = {}

    def apply_chat_template(self, messages, tools=None, tokenize=False, add_generation_prompt=True):
        self.seen = {"messages": messages, "tools": tools}
        return "rendered"


def test_native_template_gets_the_tools_list() -> None:
    native = _Template("{% for t in tools %}{{ t }}{% endfor %}")
    assert supports_native_tools(native) and render_tool_prompt(native, [{"role": "user", "content": "x"}], [WEATHER])
    assert native.seen["tools"] == [WEATHER]
    plain = _Template("{% for m in messages %}{{ m.content }}{% endfor %}")
    render_tool_prompt(plain, [{"role": "user", "content": "x"}], [WEATHER])
    assert plain.seen["tools"] is None and plain.seen["messages"][0]["role"] == "system"
