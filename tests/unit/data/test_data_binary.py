"""The binary-feedback (KTO) format: {prompt, completion, label}, detected from its keys, strict about the label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailorlm.data import BinaryFeedbackRecord, detect_format, load_dataset
from tailorlm.data.stats import record_lengths
from tailorlm.errors import DataError

pytestmark = pytest.mark.unit


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_binary_strings_and_messages(tmp_path: Path) -> None:
    rows = [
        {"prompt": "2+2?", "completion": "4", "label": True},
        {
            "prompt": [{"role": "user", "content": "2+2?"}],
            "completion": [{"role": "assistant", "content": "5"}],
            "label": False,
        },
    ]
    ds = load_dataset(jsonl(tmp_path / "d.jsonl", rows))
    assert (ds.format, ds.kind) == ("binary", "binary")
    assert isinstance(ds[0], BinaryFeedbackRecord) and ds[0].label is True
    assert ds[1].completion[0].content == "5" and ds[1].label is False
    assert detect_format({"prompt", "completion", "label"}, source="f") == "binary"
    assert detect_format({"text", "label"}, source="f") == "classification"  # unchanged


def test_binary_label_must_be_a_boolean(tmp_path: Path) -> None:
    rows = [{"prompt": "q", "completion": "a", "label": 1}, {"prompt": "q", "completion": " ", "label": "yes"}]
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "d.jsonl", rows), format="binary")
    assert sorted((i.line, i.field) for i in err.value.issues) == [(1, "label"), (2, "completion"), (2, "label")]


def test_binary_csv_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion,label\nq,a,true\nq,b,0\n")
    assert [r.label for r in load_dataset(path)] == [True, False]


def test_binary_token_lengths(tiny_tokenizer) -> None:
    record = BinaryFeedbackRecord(prompt="hello there", completion="general", label=True)
    [n] = record_lengths([record], tiny_tokenizer)
    assert n == len(tiny_tokenizer("hello theregeneral")["input_ids"])
