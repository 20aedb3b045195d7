"""Feedback export: which feedback becomes which record, and every file loads as the data format it claims."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.data import load_dataset
from tailorlm.serve.export import export_feedback, prompt_of
from tailorlm.serve.store import FeedbackRecord, ResponseRecord, SQLiteStore

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0
Q = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "fb.sqlite")
    yield s
    s.close()


def add(store: SQLiteStore, rid: str, answer: str, request: dict[str, Any] | None = None, **kw: Any) -> None:
    kw.setdefault("created", T0)
    kw.setdefault("system", "sys-a")
    kw.setdefault("model", "chat")
    store.record_response(ResponseRecord(id=rid, request=request or {"messages": Q}, response=answer, **kw))


def fb(store: SQLiteStore, rid: str, at: float, **kw: Any) -> None:
    store.record_feedback(FeedbackRecord(response_id=rid, created=T0 + at, **kw))


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_turns_each_kind_of_feedback_into_records(store: SQLiteStore, tmp_path: Path) -> None:
    add(store, "r1", "Paris.")
    add(store, "r2", "It is Paris, the capital.", system="sys-b")
    add(store, "r3", "Lyon", request={"prompt": "The capital of France is"})
    add(store, "r4", "", status=500, error="engine died")
    add(store, "r5", "Paris, France.", shadow=True, system="sys-shadow")
    add(store, "r6", "Berlin.", request={"messages": [{"role": "user", "content": "Capital of Germany?"}]})
    fb(store, "r1", 1, rating="up", user="u1")
    fb(store, "r1", 2, rating="down", user="u1")  # the same user changed their mind: only "down" counts
    fb(store, "r3", 3, score=5, user="u1")
    fb(store, "r3", 4, score=3, user="u2")  # neutral: no binary record
    fb(store, "r1", 5, edited="Paris is the capital of France.")  # → sft + preference
    fb(store, "r2", 6, edited="  It is Paris, the capital. ")  # same as the answer: sft only
    fb(store, "r1", 7, compare_to="r2", choice="other")  # r2 over r1
    fb(store, "r1", 8, compare_to="r5", choice="tie")  # a tie: skipped
    fb(store, "r1", 9, compare_to="r6", choice="this")  # different prompts: skipped
    fb(store, "r4", 10, rating="down")  # a failed response: never exported
    fb(store, "r5", 11, edited="Paris.\n", comment="shorter")  # a shadow answer's edit: kept (sft + preference)

    out = tmp_path / "export"
    counts = export_feedback(store, out)
    assert counts == {"sft": 3, "preference": 3, "binary": 2, "feedback": 11, "skipped": 5}

    sft = read(out / "sft.jsonl")
    assert sft[0] == {"messages": [*Q, {"role": "assistant", "content": "Paris is the capital of France."}]}
    assert [s["messages"][-1]["content"] for s in sft[1:]] == ["  It is Paris, the capital. ", "Paris.\n"]
    pref = read(out / "preference.jsonl")
    assert pref[0] == {
        "prompt": Q,
        "chosen": [{"role": "assistant", "content": "Paris is the capital of France."}],
        "rejected": [{"role": "assistant", "content": "Paris."}],
    }
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pref[1:]] == [
        ("It is Paris, the capital.", "Paris."),  # the pairwise choice
        ("Paris.\n", "Paris, France."),  # the shadow answer's edit
    ]
    binary = read(out / "binary.jsonl")
    assert binary == [
        {"prompt": Q, "completion": [{"role": "assistant", "content": "Paris."}], "label": False},
        {"prompt": "The capital of France is", "completion": "Lyon", "label": True},
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["binary.jsonl"] == {"format": "binary", "kind": "binary", "records": 2}
    assert manifest["skipped"] == {
        "binary: neutral score 3": 1,
        "binary: the response failed": 1,
        "preference: edit identical to the answer": 1,
        "preference: the two responses answer different prompts": 1,
        "preference: tie": 1,
    }
    assert (manifest["first_feedback"], manifest["last_feedback"]) == (T0 + 1, T0 + 11)

    # Each file loads as the format it claims, detected from its keys.
    assert (load_dataset(out / "sft.jsonl").format, load_dataset(out / "sft.jsonl").kind) == ("openai", "chat")
    assert load_dataset(out / "preference.jsonl").kind == "preference"
    assert (load_dataset(out / "binary.jsonl").format, load_dataset(out / "binary.jsonl")[1].label) == ("binary", True)
    runner = CliRunner()
    for name, fmt in (("sft.jsonl", "openai"), ("preference.jsonl", "preference"), ("binary.jsonl", "binary")):
        for args in ([], ["--format", fmt]):
            result = runner.invoke(app, ["data", "validate", str(out / name), "--tokenizer", "none", *args])
            assert result.exit_code == 0, result.output
            assert "dataset is valid" in result.output


def test_filters_and_empty_export(store: SQLiteStore, tmp_path: Path) -> None:
    add(store, "r1", "Paris.", system="sys-a")
    add(store, "r2", "Paris!", system="sys-b", model="other")
    fb(store, "r1", 1, rating="up")
    fb(store, "r2", 2, rating="up")
    assert export_feedback(store, tmp_path / "a", model="sys-a")["binary"] == 1  # a System name
    assert export_feedback(store, tmp_path / "b", model="other")["binary"] == 1  # a requested model name
    assert export_feedback(store, tmp_path / "c", since=T0 + 2)["binary"] == 1
    assert export_feedback(store, tmp_path / "d", until=T0 + 2)["binary"] == 1
    counts = export_feedback(store, tmp_path / "e", model="nobody")
    assert counts == {"sft": 0, "preference": 0, "binary": 0, "feedback": 0, "skipped": 0}
    assert (tmp_path / "e" / "sft.jsonl").read_text() == ""  # written anyway: no stale file from an older export


def test_prompt_normalization() -> None:
    parts = {
        "messages": [
            {"role": "developer", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                    {"type": "text", "text": "b"},
                ],
                "weight": 1,
            },
        ]
    }
    assert prompt_of(parts) == [{"role": "system", "content": "sys"}, {"role": "user", "content": "a\nb"}]
    assert prompt_of({"prompt": ["only one"]}) == "only one"
    assert prompt_of({"prompt": ["a", "b"]}) is None
    assert prompt_of({"messages": [{"role": "wizard", "content": "x"}]}) is None
    assert prompt_of({}) is None
