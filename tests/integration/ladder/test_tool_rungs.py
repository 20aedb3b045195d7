"""A task scored on tool calls climbs zero-shot (prompt-only), tools-constrained and tools-lora on a tiny random
model: every rung builds, scores and lands in the report; constrained calls always validate; an unchanged ladder is
read back from its cache. Other tasks skip the tool rungs with a reason."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailorlm.core.task import Task
from tailorlm.ladder.rungs import applicable
from tailorlm.ladder.runner import Ladder

pytestmark = pytest.mark.integration

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


def _call(a: int, b: int) -> dict:
    args = json.dumps({"a": a, "b": b})
    return {"id": "call_0", "type": "function", "function": {"name": "add", "arguments": args}}


@pytest.fixture
def tool_task(tmp_path: Path) -> Iterator[Path]:
    old = os.environ.get("TAILOR_CACHE")
    os.environ["TAILOR_CACHE"] = str(tmp_path / "cache")
    train = [
        {"messages": [{"role": "user", "content": f"Add {a} and {b}."},
                      {"role": "assistant", "content": None, "tool_calls": [_call(a, b)]}], "tools": [ADD]}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
    ]  # fmt: skip
    evals = [
        {"input": f"Add {a} and {b}.", "metadata": {"tools": [ADD], "category": "simple",
                                                    "ground_truth": [{"add": {"a": [a], "b": [b]}}]}}
        for a, b in [(2, 2), (9, 1), (4, 5)]
    ]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (tmp_path / "task.yaml").write_text(
        "name: tiny-tools\neval: {path: eval.jsonl}\ntrain: {path: train.jsonl}\n"
        "metrics: [tool_ast, tool_call_valid]\ngeneration: {max_new_tokens: 40}\n"
        "ladder:\n  batch_size: 3\n  canary_limit: 3\n  tools: {tool_choice: required}\n"
        "  sft: {max_steps: 2, batch_size: 2, max_length: 2048}\n"
    )
    yield tmp_path / "task.yaml"
    if old is None:
        os.environ.pop("TAILOR_CACHE", None)
    else:
        os.environ["TAILOR_CACHE"] = old


def test_tool_rungs_build_score_and_cache(tool_task: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    task = Task.load(tool_task)
    rungs = ["zero-shot", "tools-constrained", "tools-lora"]
    out = tmp_path / "ladder"
    outcome = Ladder(task, model=str(tiny_model_dir), out=out, rungs=rungs, progress=False).run()
    by_name = {r.name: r for r in outcome.results}
    assert set(by_name) == set(rungs) and all(r.error is None for r in by_name.values()), outcome.results
    # Every constrained answer that finished is a valid call: the grammar allows nothing else.
    constrained = [json.loads(x) for x in (Path(by_name["tools-constrained"].eval_run) / "predictions.jsonl").open()]
    finished = [p for p in constrained if '"}' in p["prediction"] or "</tool_call>" in p["prediction"]]
    assert all(p["scores"]["tool_call_valid"] == 1.0 for p in finished)
    assert (out / "report" / "report.html").is_file()
    # The LoRA rung trained on its records with their tools (rendered into the prompt as at inference).
    first = json.loads((out / "rungs" / "tools-lora" / "train.jsonl").read_text().splitlines()[0])
    assert first["tools"] == [ADD] and first["messages"][-1]["tool_calls"]
    again = Ladder(task, model=str(tiny_model_dir), out=out, rungs=rungs, progress=False).run()
    assert all(r.cached for r in again.results)


def test_other_tasks_skip_the_tool_rungs() -> None:
    task = Task.load(Path(__file__).resolve().parents[3] / "examples/xquad-qa/task.yaml")
    reasons = {r.name: why for r, why in applicable(task, ["tools-constrained", "tools-lora"])}
    assert all(why and "tool calls" in why for why in reasons.values())


def test_constrained_labels_rung_answers_only_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    os.environ.setdefault("TAILOR_CACHE", str(tmp_path / "cache"))
    rows = [("great film", "positive"), ("awful plot", "negative"), ("loved it", "positive"), ("boring", "negative")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"input": x, "reference": y}) + "\n" for x, y in rows))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"input": x, "reference": y}) + "\n" for x, y in rows))
    (tmp_path / "task.yaml").write_text(
        "name: tiny-sentiment\neval: {path: eval.jsonl}\ntrain: {path: train.jsonl}\nmetrics: [accuracy]\n"
        "generation: {max_new_tokens: 6, temperature: 1.0, seed: 1}\nladder: {batch_size: 4, canary_limit: 3}\n"
    )
    task = Task.load(tmp_path / "task.yaml")
    outcome = Ladder(task, model=str(tiny_model_dir), out=tmp_path / "ladder", rungs=["constrained-labels"],
                     progress=False).run()  # fmt: skip
    result = outcome.results[0]
    assert result.error is None, result.error
    predictions = [json.loads(x) for x in (Path(result.eval_run) / "predictions.jsonl").open()]
    assert {p["prediction"] for p in predictions} <= {"positive", "negative"}
