"""`tailor data convert-bfcl`: BFCL questions and possible answers → eval and chat records that validate.

Small BFCL-shaped files are written by the tests (so they run without ../shared); one test converts the real
simple_python file with the 75/25 split the example uses, and the bundled example tasks must load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.data.bfcl import NO_TOOL_ANSWER

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

FUNCTION = {
    "name": "math.hypot",
    "description": "Euclidean norm.",
    "parameters": {
        "type": "dict",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "z": {"type": "float"}},
        "required": ["x", "y"],
    },
}
QUESTIONS = [
    {
        "id": "parallel_0",
        "question": [[{"role": "user", "content": "Hypot of (3, 4) and (5, 12)?"}]],
        "function": [FUNCTION],
    },
    {"id": "parallel_1", "question": [[{"role": "user", "content": "Hypot of (1, 1)?"}]], "function": [FUNCTION]},
]
ANSWERS = [
    {
        "id": "parallel_0",
        "ground_truth": [
            {"math.hypot": {"x": [3], "y": [4], "z": ["", 0.0]}},
            {"math.hypot": {"x": [5], "y": [12], "z": [""]}},
        ],
    },
    {"id": "parallel_1", "ground_truth": [{"math.hypot": {"x": [1], "y": [1], "z": [""]}}]},
]
IRRELEVANT = [
    {"id": "irrelevance_0", "question": [[{"role": "user", "content": "Who wrote Hamlet?"}]], "function": [FUNCTION]}
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def convert(*args: str) -> None:
    result = runner.invoke(app, ["data", "convert-bfcl", *args])
    assert result.exit_code == 0, result.output


def validate(path: Path, kind: str) -> dict[str, Any]:
    result = runner.invoke(app, ["data", "validate", str(path), "--tokenizer", "none", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == kind
    return report


def test_convert_to_chat_and_eval(tmp_path: Path) -> None:
    questions = write_jsonl(tmp_path / "BFCL_v4_parallel.json", QUESTIONS)
    answers = write_jsonl(tmp_path / "answers.json", ANSWERS)
    convert(str(questions), "--answers", str(answers), "--to", "chat", "--out", str(tmp_path / "chat.jsonl"))
    convert(str(questions), "--answers", str(answers), "--to", "eval", "--out", str(tmp_path / "eval.jsonl"))
    assert validate(tmp_path / "chat.jsonl", "chat")["records"] == 2
    assert validate(tmp_path / "eval.jsonl", "eval")["records"] == 2

    chat = read_jsonl(tmp_path / "chat.jsonl")[0]
    assistant = chat["messages"][-1]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in assistant["tool_calls"]]
    # The first allowed value that is not "" (z: 0.0), and an argument whose only allowed value is "" left out.
    assert calls == [("math.hypot", {"x": 3, "y": 4, "z": 0.0}), ("math.hypot", {"x": 5, "y": 12})]
    params = chat["tools"][0]["function"]["parameters"]
    assert params["type"] == "object" and params["properties"]["z"]["type"] == "number"

    record = read_jsonl(tmp_path / "eval.jsonl")[0]
    assert record["input"] == "Hypot of (3, 4) and (5, 12)?"
    meta = record["metadata"]
    assert meta["category"] == "parallel" and meta["bfcl_id"] == "parallel_0"
    assert meta["ground_truth"] == ANSWERS[0]["ground_truth"] and meta["tools"] == chat["tools"]


def test_irrelevance_needs_no_answers_and_answers_in_text(tmp_path: Path) -> None:
    questions = write_jsonl(tmp_path / "irrelevance.json", IRRELEVANT)
    convert(str(questions), "--to", "chat", "--out", str(tmp_path / "chat.jsonl"))
    convert(str(questions), "--to", "eval", "--out", str(tmp_path / "eval.jsonl"))
    validate(tmp_path / "chat.jsonl", "chat")
    validate(tmp_path / "eval.jsonl", "eval")
    assert read_jsonl(tmp_path / "chat.jsonl")[0]["messages"][-1] == {"role": "assistant", "content": NO_TOOL_ANSWER}
    record = read_jsonl(tmp_path / "eval.jsonl")[0]
    assert record["metadata"]["ground_truth"] == [] and record["metadata"]["category"] == "irrelevance"


def test_missing_answers_are_an_error_that_names_the_question(tmp_path: Path) -> None:
    questions = write_jsonl(tmp_path / "q.json", QUESTIONS)
    result = runner.invoke(app, ["data", "convert-bfcl", str(questions), "--to", "eval", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "parallel_0" in result.output
    result = runner.invoke(
        app, ["data", "convert-bfcl", str(questions), "--to", "eval", "--out", str(tmp_path / "o"), "--split", "0.5"]
    )
    assert result.exit_code != 0 and "--out-rest" in result.output


def test_real_split_matches_between_chat_and_eval(tmp_path: Path, shared_data: Path) -> None:
    bfcl = shared_data / "bfcl"
    train, held_out = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    convert(
        str(bfcl / "BFCL_v4_simple_python.json"),
        "--answers",
        str(bfcl / "possible_answer" / "BFCL_v4_simple_python.json"),
        "--to",
        "chat",
        "--out",
        str(train),
        "--split",
        "0.75",
        "--seed",
        "0",
        "--out-rest",
        str(held_out),
        "--rest-to",
        "eval",
    )
    assert validate(train, "chat")["records"] == 300
    assert validate(held_out, "eval")["records"] == 100
    train_ids = {r["metadata"]["bfcl_id"] for r in read_jsonl(train)}
    eval_ids = {r["metadata"]["bfcl_id"] for r in read_jsonl(held_out)}
    assert not train_ids & eval_ids and len(train_ids | eval_ids) == 400
    # The bundled example is this very split (scripts/build_bfcl_example.py).
    example = REPO / "examples" / "bfcl" / "simple_python"
    assert {r["metadata"]["bfcl_id"] for r in read_jsonl(example / "eval.jsonl")} == eval_ids


@pytest.mark.parametrize("category", ["simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance"])
def test_example_tasks_load(category: str) -> None:
    from tailorlm.core.task import Task
    from tailorlm.eval.examples import load_records

    task = Task.load(REPO / "examples" / "bfcl" / category / "task.yaml")
    assert task.metrics == ["tool_ast", "tool_call_valid"]
    records, _ = load_records(task)
    assert records and all(r.metadata["category"] == category and r.metadata["tools"] for r in records)
    if task.train is not None:
        validate(task.resolve(task.train.path), "chat")
