"""Token-length statistics with the tiny ChatML tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tailorlm.data import Dataset, load_dataset, record_lengths, token_stats
from tailorlm.data.stats import describe, percentile, summarize

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 95) == 10
    assert percentile(list(range(101)), 95) == 95


def test_summarize() -> None:
    stats = summarize([3, 1, 2])
    assert {k: v for k, v in stats.items() if k != "p95"} == {"count": 3, "min": 1, "mean": 2.0, "p50": 2, "max": 3}
    assert stats["p95"] == pytest.approx(2.9)
    assert summarize([])["count"] == 0 and summarize([])["max"] is None


def test_chat_lengths_use_the_chat_template(tiny_tokenizer: Any) -> None:
    ds = load_dataset(FIXTURES / "chat.jsonl")
    expected = [
        len(
            tiny_tokenizer.apply_chat_template([m.model_dump(exclude_none=True) for m in r.messages], tokenize=True)[
                "input_ids"
            ]
        )
        for r in ds
    ]
    assert record_lengths(ds.records, tiny_tokenizer) == expected
    stats = token_stats(ds, tiny_tokenizer)
    assert stats["count"] == 2 and stats["min"] == min(expected) and stats["max"] == max(expected)
    assert stats["min"] <= stats["p50"] <= stats["p95"] <= stats["max"]
    # The template adds role markers: a rendered chat is longer than its bare contents.
    bare = len(tiny_tokenizer("What is 2+2?4You are terse.")["input_ids"])
    assert expected[0] > bare


def test_text_kinds_tokenize_their_text(tiny_tokenizer: Any) -> None:
    ds = load_dataset(FIXTURES / "classification.csv")
    assert record_lengths(ds.records, tiny_tokenizer) == [len(tiny_tokenizer(r.text)["input_ids"]) for r in ds]
    ev = Dataset.from_dicts([{"input": "q?", "context": "Paris is the capital."}], "eval")
    assert record_lengths(ev.records, tiny_tokenizer) == [
        len(tiny_tokenizer("Paris is the capital.\n\nq?")["input_ids"])
    ]


def test_preference_takes_the_longer_answer(tiny_tokenizer: Any) -> None:
    ds = Dataset.from_dicts([{"prompt": "2+2?", "chosen": "4", "rejected": "it is five, obviously"}], "preference")
    [length] = record_lengths(ds.records, tiny_tokenizer)
    assert length == len(tiny_tokenizer("2+2?it is five, obviously")["input_ids"])
    msgs = Dataset.from_dicts(
        [{"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "five"}], "preference"
    )
    assert record_lengths(msgs.records, tiny_tokenizer)[0] > 0


def test_describe_adds_tokens_only_with_a_tokenizer(tiny_tokenizer: Any) -> None:
    ds = load_dataset(FIXTURES / "chat.jsonl")
    assert "tokens" not in describe(ds)
    assert describe(ds, tiny_tokenizer)["tokens"]["count"] == 2
