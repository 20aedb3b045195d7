"""The agent loop: the model answers or calls tools; calls run (allowlisted, validated, timed out); their results go
back as data; repeat until an answer or the step limit.

With ``react=True`` the System message also asks for one ``Thought:`` line before each call (Yao et al. 2023,
"ReAct: Synergizing Reasoning and Acting in Language Models"), so the trace shows why each tool was called. Every
model turn and every tool call is a step of the ``Trace`` (inputs, outputs, seconds, tokens, error), which the
caller saves into its Run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tailorlm.models.engines.base import GenerationParams, Request, Usage
from tailorlm.tools.calling import parse_tool_calls, render_tool_prompt
from tailorlm.tools.execute import Trace, TraceStep, execute_call, format_result
from tailorlm.tools.registry import ToolRegistry

REACT_HINT = (
    "Before each function call, write one line that starts with 'Thought:' and says why the call is needed. "
    "When you know the answer, reply with it in plain text, without any block."
)


@dataclass
class AgentResult:
    """The final answer, the whole conversation (tool turns included), and what it took."""

    answer: str
    messages: list[dict[str, Any]]
    steps: int  # model turns
    tool_calls: int
    finish_reason: Literal["answer", "max_steps"]
    trace: Trace
    usage: Usage = field(default_factory=Usage)


def run_agent(
    engine: Any,
    messages: Sequence[dict[str, Any]],
    registry: ToolRegistry,
    *,
    params: GenerationParams | None = None,
    max_steps: int = 6,
    allowlist: Collection[str] | None = None,
    timeout_s: float | None = None,
    react: bool = False,
    first_call: Literal["auto", "required"] = "auto",
    on_step: Callable[[TraceStep], None] | None = None,
) -> AgentResult:
    """Run the loop for one conversation. Only allowlisted tools are shown to the model and can run.

    ``first_call="required"`` constrains the first turn to a valid call (needs the hf engine): a small model that
    would otherwise answer from memory is made to look things up once, and decides freely from then on."""
    params = params or GenerationParams()
    names = [n for n in registry.names() if allowlist is None or n in allowlist]
    tools = [t for t in registry.schemas() if t["function"]["name"] in names]
    convo = [dict(m) for m in messages]
    if react:
        if convo and convo[0].get("role") == "system":
            convo[0] = {**convo[0], "content": f"{convo[0].get('content') or ''}\n\n{REACT_HINT}".strip()}
        else:
            convo.insert(0, {"role": "system", "content": REACT_HINT})
    trace = Trace()
    usage = Usage()
    calls_made = 0

    def record(step: TraceStep) -> None:
        trace.add(step)
        if on_step is not None:
            on_step(step)

    for step in range(1, max_steps + 1):
        prompt = render_tool_prompt(engine.tokenizer, convo, tools)
        constraint = None
        if step == 1 and first_call == "required" and tools:
            from tailorlm.tools.constrain import Constraint

            constraint = Constraint(type="tool_calls", tools=tools, mode="required", parallel=False)
        start = time.perf_counter()
        completion = engine.generate([Request(prompt=prompt, constraint=constraint)], params)[0]
        usage = Usage(
            prompt_tokens=usage.prompt_tokens + completion.usage.prompt_tokens,
            completion_tokens=usage.completion_tokens + completion.usage.completion_tokens,
        )
        content, calls = parse_tool_calls(completion.text)
        record(
            TraceStep(
                kind="model",
                inputs={"step": step, "prompt_tokens": completion.usage.prompt_tokens},
                outputs={"text": completion.text, "calls": [c.openai() for c in calls]},
                seconds=time.perf_counter() - start,
                tokens=completion.usage.completion_tokens,
            )
        )
        if not calls:
            convo.append({"role": "assistant", "content": content})
            return AgentResult(content, convo, step, calls_made, "answer", trace, usage)
        convo.append({"role": "assistant", "content": content or None, "tool_calls": [c.openai() for c in calls]})
        for call in calls:
            calls_made += 1
            result = execute_call(registry, call, allowlist=names, timeout_s=timeout_s)
            record(
                TraceStep(
                    kind="tool",
                    inputs={"name": call.name, "arguments": call.arguments, "id": call.id},
                    outputs={"content": result.content},
                    seconds=result.seconds,
                    error=result.error,
                )
            )
            content = format_result(result)
            convo.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content})
    answer = f"I could not finish within {max_steps} steps."
    convo.append({"role": "assistant", "content": answer})
    return AgentResult(answer, convo, max_steps, calls_made, "max_steps", trace, usage)
