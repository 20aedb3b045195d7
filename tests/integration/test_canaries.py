"""Forgetting canaries: the packaged file loads and validates, a short run scores on a tiny model, and the
promotion rule compares before/after scores as a Task's ``max_drop`` says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tailorlm.errors import ConfigError, DataError
from tailorlm.eval.canaries import compare_canaries, load_canaries, run_canaries

pytestmark = pytest.mark.integration

SOURCES = {"mmlu", "arc_challenge", "arc_easy", "boolq"}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_packaged_canaries_load_and_are_well_formed() -> None:
    items = load_canaries()
    assert len(items) == 300
    assert {it["source"] for it in items} == SOURCES
    assert len({it["id"] for it in items}) == len(items)
    for it in items:
        assert it["context"].endswith("Answer:")
        assert 0 <= it["answer"] < len(it["choices"])


def test_limit_draws_from_every_source() -> None:
    items = load_canaries(limit=10)
    assert len(items) == 10
    assert {it["source"] for it in items} == SOURCES
    assert load_canaries(limit=10) == items  # deterministic
    with pytest.raises(ConfigError):
        load_canaries(limit=0)


def test_a_malformed_file_names_line_and_field(tmp_path: Path) -> None:
    good = {"id": "a", "source": "s", "context": "Q?\nAnswer:", "choices": ["x", "y"], "answer": 1}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answer": 5}) + "\n")
    with pytest.raises(DataError, match=r"c\.jsonl:2: field 'answer'"):
        load_canaries(path)
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(DataError, match=r"c\.jsonl:2: invalid JSON"):
        load_canaries(path)
    path.write_text(json.dumps(good) + "\n")
    assert load_canaries(path) == [good]


def test_run_canaries_on_a_tiny_model(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    items = load_canaries(limit=10)
    result = run_canaries(model, tok, items, batch_size=4)
    assert result["n"] == 10
    assert set(result["by_source"]) == SOURCES
    assert sum(s["n"] for s in result["by_source"].values()) == 10
    assert result["score"] == pytest.approx(sum(p["correct"] for p in result["per_item"]) / 10)
    weighted = sum(s["score"] * s["n"] for s in result["by_source"].values()) / 10
    assert result["score"] == pytest.approx(weighted)
    assert [p["id"] for p in result["per_item"]] == [it["id"] for it in items]
    # The same model scores the same: the before/after comparison measures the model, not the harness.
    again = run_canaries(model, tok, items, batch_size=10)
    assert [p["pred"] for p in again["per_item"]] == [p["pred"] for p in result["per_item"]]
    same = compare_canaries(result, again, max_drop=0.0)
    assert same["drop"] == 0.0
    assert same["promotable"]
    assert set(same["by_source"]) == SOURCES


@pytest.mark.unit
def test_compare_canaries_promotion_rule() -> None:
    ok = compare_canaries(0.45, 0.43, max_drop=0.05)
    assert ok["drop"] == pytest.approx(0.02)
    assert ok["promotable"]
    assert ok | {"drop": 0.0} == {"before": 0.45, "after": 0.43, "drop": 0.0, "max_drop": 0.05, "promotable": True}
    assert not compare_canaries(0.45, 0.39, max_drop=0.05)["promotable"]
    assert compare_canaries(0.45, 0.40, max_drop=0.05)["promotable"]  # exactly at the limit passes
    gain = compare_canaries(0.40, 0.50, max_drop=0.0)
    assert gain["drop"] == pytest.approx(-0.10)
    assert gain["promotable"]
    unchecked = compare_canaries(0.60, 0.10, max_drop=None)
    assert unchecked["promotable"]
    assert unchecked["drop"] == pytest.approx(0.50)
    assert unchecked["max_drop"] is None
    assert compare_canaries({"score": 0.5}, {"score": 0.4}, 0.2)["drop"] == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        compare_canaries(0.5, 0.4, max_drop=-0.1)
