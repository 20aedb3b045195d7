"""Real datasets from ../shared/data: the loaders on files written by others, at full size."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailorlm.data import load_dataset
from tailorlm.errors import DataError

pytestmark = pytest.mark.slow


def test_gsm8k_as_eval_with_field_options(shared_data: Path) -> None:
    path = shared_data / "gsm8k" / "train.jsonl"
    with pytest.raises(DataError, match="cannot tell the format"):  # question/answer is no known shape
        load_dataset(path)
    ds = load_dataset(path, kind="eval", input_field="question", reference_field="answer")
    assert (ds.format, ds.kind, len(ds)) == ("eval", "eval", 7473)
    assert ds[0].input.startswith("Natalia sold clips") and ds[0].reference.endswith("#### 72")
    train, held_out = ds.split(eval_size=500, seed=0)
    assert (len(train), len(held_out)) == (6973, 500)


def test_sst2_headerless_tsv(shared_data: Path) -> None:
    # The SST-2 files have no header row: each line is "sentence<TAB>0|1", and sentences contain quotes.
    path = shared_data / "sst" / "sst2_train.tsv"
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert err.value.hint is not None and "columns" in err.value.hint
    ds = load_dataset(path, columns=["text", "label"])
    assert (ds.kind, len(ds), ds.label_names) == ("classification", 6920, ["0", "1"])
    assert load_dataset(shared_data / "sst" / "sst2_dev.tsv", columns=["text", "label"]).__len__() == 872


def test_banking77_csv(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "banking77" / "train.csv", label_field="category")
    assert (ds.kind, len(ds), len(ds.label_names)) == ("classification", 10003, 77)
    assert ds[0].label == "card_arrival"


def test_alpaca_eval_outputs_extra_keys_and_empty_outputs(shared_data: Path) -> None:
    path = shared_data / "alpaca_eval" / "text_davinci_003_outputs.json"
    # Extra keys ("dataset", "generator") are issues by default, on the line where each object starts...
    with pytest.raises(DataError) as err:
        load_dataset(path)
    first = err.value.issues[0]
    assert (first.line, first.field) == (2, "dataset")
    # ...and dropped with extra="ignore". Two records have an empty output: real problems, kept as issues.
    ds = load_dataset(path, extra="ignore", strict=False)
    assert (ds.format, ds.kind, len(ds)) == ("alpaca", "chat", 803)
    assert [(i.field, i.message) for i in ds.issues] == [("output", "empty text")] * 2
    assert [m.role for m in ds[0].messages] == ["user", "assistant"]


def test_nq_open_list_references(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "nq_open" / "NQ-open.dev.jsonl", input_field="question", reference_field="answer")
    assert len(ds) == 3610 and isinstance(ds[0].reference, list)


def test_mmlu_extra_columns_as_metadata(shared_data: Path) -> None:
    ds = load_dataset(
        shared_data / "mmlu" / "zero_shot_mmlu_val.jsonl", format="eval", extra="metadata", reference_field="output"
    )
    assert len(ds) == 1531 and "subject" in ds[0].metadata


def test_xquad_single_object_is_explained(shared_data: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(shared_data / "xquad" / "xquad.en.json")
    assert "got one object" in err.value.issues[0].message
