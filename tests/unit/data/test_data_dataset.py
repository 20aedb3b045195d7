"""The ``Dataset`` object: fingerprints, deterministic splits, HF conversion, labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailorlm.data import Dataset, load_dataset
from tailorlm.data.split import split_indices
from tailorlm.errors import DataError

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def numbered(tmp_path: Path, n: int) -> Dataset:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(n)))
    return load_dataset(path)


def test_fingerprint_is_the_same_for_the_same_chats_in_other_formats(tmp_path: Path) -> None:
    openai = load_dataset(FIXTURES / "chat.jsonl")
    sharegpt = load_dataset(FIXTURES / "chat_sharegpt.json")
    assert (openai.format, sharegpt.format) == ("openai", "sharegpt")
    assert openai.fingerprint == sharegpt.fingerprint
    assert openai.content_sha256 != sharegpt.content_sha256  # the bytes differ, the records do not

    # Alpaca and the OpenAI rendering of the same pairs; key order and whitespace do not matter either.
    alpaca = load_dataset(FIXTURES / "alpaca.json")
    rows = [
        {
            "messages": [
                {"content": r.messages[0].content, "role": "user"},
                {"role": "assistant", "content": r.messages[1].content},
            ]
        }
        for r in alpaca
    ]
    (tmp_path / "same.jsonl").write_text("".join(json.dumps(r, indent=None) + "\n" for r in rows))
    assert load_dataset(tmp_path / "same.jsonl").fingerprint == alpaca.fingerprint


def test_fingerprint_is_stable_across_runs_and_changes_with_content(tmp_path: Path) -> None:
    # A golden value: the fingerprint is recorded in run directories, so it must not drift between versions.
    ds = load_dataset(FIXTURES / "chat.jsonl")
    assert ds.fingerprint == "f865aa1f235ddb664585498465ed3583a2c753473ead8884cf737fd85d145c1a"
    assert ds.fingerprint == load_dataset(FIXTURES / "chat.jsonl").fingerprint
    first, second = numbered(tmp_path, 3), load_dataset(FIXTURES / "chat.jsonl")
    assert first.fingerprint != second.fingerprint
    assert len(first.fingerprint) == 64


def test_split_is_deterministic_by_seed(tmp_path: Path) -> None:
    ds = numbered(tmp_path, 50)
    train, held_out = ds.split(eval_fraction=0.2, seed=1)
    again_train, again_eval = ds.split(eval_fraction=0.2, seed=1)
    assert (len(train), len(held_out)) == (40, 10)
    assert [r.text for r in held_out] == [r.text for r in again_eval]
    assert train.fingerprint == again_train.fingerprint
    assert {r.text for r in train}.isdisjoint(r.text for r in held_out)
    _, other = ds.split(eval_fraction=0.2, seed=2)
    assert [r.text for r in other] != [r.text for r in held_out]
    assert ds.split(eval_size=7, seed=0)[1].__len__() == 7


def test_split_keeps_order_and_ignores_file_order() -> None:
    keys = [f"k{i}" for i in range(20)]
    train, held_out = split_indices(keys, eval_size=5, seed=3)
    assert train == sorted(train) and held_out == sorted(held_out) and len(set(train + held_out)) == 20
    # The same records in reverse order put the same records in eval: the split hashes content, not positions.
    _, rev_eval = split_indices(keys[::-1], eval_size=5, seed=3)
    assert {keys[::-1][i] for i in rev_eval} == {keys[i] for i in held_out}


def test_split_refuses_impossible_sizes(tmp_path: Path) -> None:
    ds = numbered(tmp_path, 3)
    with pytest.raises(DataError):
        ds.split(eval_size=3)
    with pytest.raises(DataError):
        ds.split(eval_fraction=1.5)
    with pytest.raises(ValueError):
        ds.split()


def test_to_hf_rows(tmp_path: Path) -> None:
    hf = load_dataset(FIXTURES / "chat.jsonl").to_hf()
    assert hf.column_names == ["messages"] and len(hf) == 2
    assert hf[1]["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    ev = load_dataset(FIXTURES / "eval.csv").to_hf()
    assert set(ev.column_names) == {"input", "reference", "context", "metadata"} and ev[0]["context"] is None


def test_label_names_and_summary() -> None:
    ds = load_dataset(FIXTURES / "classification.csv")
    assert ds.label_names == ["neg", "pos"]
    summary = ds.summary()
    assert summary["labels"] == 2 and summary["records"] == 3 and summary["format"] == "classification"
    with pytest.raises(TypeError):
        _ = load_dataset(FIXTURES / "chat.jsonl").label_names


def test_from_dicts_validates() -> None:
    ds = Dataset.from_dicts([{"input": "q", "reference": "a"}], "eval")
    assert ds[0].reference == "a"
    with pytest.raises(DataError) as err:
        Dataset.from_dicts([{"input": "q"}, {"input": 3}], "eval")
    assert str(err.value.issues[0]).startswith("<memory>:2: input:")
