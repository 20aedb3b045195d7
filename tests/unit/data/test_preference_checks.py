"""Preference and binary (KTO) checks: identical and empty sides, over-long records, and the serving export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.data import load_dataset
from tailorlm.data.records import record_problems, validate_record
from tailorlm.errors import DataError

pytestmark = pytest.mark.unit

A = [{"role": "assistant", "content": "Paris."}]


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("chosen", "rejected"),
    [
        ("Paris.", "Paris."),
        ("Paris  is\nlovely.", " Paris is lovely. "),  # whitespace only
        (A, [{"role": "assistant", "content": " Paris. "}]),
        ("Paris.", A),  # text and one assistant message: the same answer
    ],
)
def test_identical_sides_are_a_problem(chosen: Any, rejected: Any) -> None:
    problems = record_problems("preference", {"prompt": "Capital?", "chosen": chosen, "rejected": rejected})
    assert [f for f, _ in problems] == ["rejected"]
    assert "identical to chosen" in problems[0][1]


@pytest.mark.parametrize(
    ("chosen", "rejected"),
    [
        ("Paris.", "Lyon."),
        ("Paris.", "paris."),  # case is content
        (A, [{"role": "assistant", "content": "Paris!"}]),
        (A, [*A, {"role": "assistant", "content": "Really."}]),
    ],
)
def test_different_sides_pass(chosen: Any, rejected: Any) -> None:
    assert record_problems("preference", {"prompt": "Capital?", "chosen": chosen, "rejected": rejected}) == []


def test_empty_sides_are_reported_as_empty_not_identical() -> None:
    problems = record_problems("preference", {"prompt": " ", "chosen": "", "rejected": []})
    assert problems == [
        ("prompt", "empty text"),
        ("chosen", "empty text"),
        ("rejected", "empty list of messages"),
    ]
    problems = record_problems(
        "preference", {"prompt": "q", "chosen": [{"role": "assistant", "content": ""}], "rejected": "a"}
    )
    assert problems == [("chosen[0].content", "empty content")]


def test_malformed_preference_file_names_line_and_field(tmp_path: Path) -> None:
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "same answer", "rejected": "same  answer"},
        {"prompt": "q", "chosen": "", "rejected": "b"},
        {"prompt": "q", "chosen": 3, "rejected": "b"},
        {"prompt": "q", "chosen": [{"role": "bot", "content": "a"}], "rejected": "b"},
        {"prompt": ["not a message"], "chosen": "a", "rejected": "b"},
    ]
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "p.jsonl", rows), kind="preference")
    where = [(i.line, i.field) for i in err.value.issues]
    assert where == [(2, "rejected"), (3, "chosen"), (4, "chosen"), (5, "chosen[0].role"), (6, "prompt[0]")]
    assert str(err.value.issues[0]).startswith(f"{tmp_path / 'p.jsonl'}:2: rejected: identical to chosen")


def test_binary_records_validate(tmp_path: Path) -> None:
    rows = [
        {"prompt": "q", "completion": "a", "label": True},
        {
            "prompt": [{"role": "user", "content": "q"}],
            "completion": [{"role": "assistant", "content": " "}],
            "label": False,
        },
        {"prompt": "", "completion": "a", "label": "no"},
    ]
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "b.jsonl", rows), kind="binary")
    where = sorted((i.line, i.field) for i in err.value.issues)
    assert where == [(2, "completion[0].content"), (3, "label"), (3, "prompt")]
    # A binary record has one answer: the same text twice across records is fine, there is no pair to compare.
    assert validate_record("binary", {"prompt": "q", "completion": "q", "label": True})[1] == []


def test_serving_export_loads_and_validates(tmp_path: Path) -> None:
    """Feedback exported by the serving store loads as preference and binary data, identical edits left out."""
    from tailorlm.serve.export import export_feedback
    from tailorlm.serve.store import FeedbackRecord, ResponseRecord, SQLiteStore

    q = [{"role": "user", "content": "Capital of France?"}]
    store = SQLiteStore(tmp_path / "fb.sqlite")
    try:
        for rid, answer in (("r1", "Paris."), ("r2", "It is Paris."), ("r3", "Paris")):
            store.record_response(
                ResponseRecord(id=rid, request={"messages": q}, response=answer, created=1.0, system="s", model="m")
            )
        store.record_feedback(FeedbackRecord(response_id="r1", created=2.0, rating="up"))
        store.record_feedback(FeedbackRecord(response_id="r2", created=3.0, rating="down"))
        store.record_feedback(FeedbackRecord(response_id="r1", created=4.0, compare_to="r2", choice="this"))
        store.record_feedback(FeedbackRecord(response_id="r3", created=5.0, edited="The capital is Paris."))
        export_feedback(store, tmp_path / "export")
    finally:
        store.close()

    pref = load_dataset(tmp_path / "export" / "preference.jsonl", kind="preference")
    assert (pref.format, len(pref)) == ("preference", 2)
    assert all(isinstance(r.prompt, list) and r.chosen[0].role == "assistant" for r in pref)
    binary = load_dataset(tmp_path / "export" / "binary.jsonl", kind="binary")
    assert (binary.format, [r.label for r in binary]) == ("binary", [True, False])
    for name in ("preference.jsonl", "binary.jsonl"):
        result = CliRunner().invoke(app, ["data", "validate", str(tmp_path / "export" / name), "-t", "none"])
        assert result.exit_code == 0 and "dataset is valid" in result.output, result.output


def test_max_tokens_names_each_long_record(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [
        {"prompt": "hi", "chosen": "yes", "rejected": "no"},
        {"prompt": "hi " * 50, "chosen": "yes", "rejected": "no"},
        {"prompt": "hi", "chosen": "ok", "rejected": "word " * 80},  # the longer answer counts
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": A,
            "rejected": [{"role": "assistant", "content": "x"}],
        },
    ]
    path = jsonl(tmp_path / "p.jsonl", rows)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "validate", str(path), "--model", str(tiny_model_dir), "--max-tokens", "40"])
    assert result.exit_code == 1, result.output
    assert "2 of 4 record(s) longer than 40 tokens" in result.output
    assert f"{path}:2: (record): prompt + longer answer:" in result.output
    assert f"{path}:3: (record): prompt + longer answer:" in result.output
    assert f"{path}:1:" not in result.output and f"{path}:4:" not in result.output
    ok = runner.invoke(app, ["data", "validate", str(path), "--model", str(tiny_model_dir), "--max-tokens", "4000"])
    assert ok.exit_code == 0 and "dataset is valid" in ok.output, ok.output
    binary = jsonl(
        tmp_path / "b.jsonl",
        [{"prompt": "q", "completion": "a", "label": True}] * 2
        + [{"prompt": "q", "completion": "long " * 80, "label": False}],
    )
    result = runner.invoke(app, ["data", "validate", str(binary), "-t", str(tiny_model_dir), "--max-tokens", "40"])
    assert result.exit_code == 1 and f"{binary}:3: (record): prompt + completion:" in result.output, result.output


def test_max_tokens_needs_a_tokenizer(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    result = CliRunner().invoke(app, ["data", "validate", str(path), "-t", "none", "--max-tokens", "10"])
    assert result.exit_code == 1 and "needs a tokenizer" in result.output
