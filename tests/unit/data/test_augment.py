"""Augmentation: tagged records, deterministic synonym replacement, engine rewrites, and no eval leakage."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tailorlm.data import Dataset, load_dataset
from tailorlm.data.augment import augment, clean_generation, synonym_replace, synonym_table, write_jsonl
from tailorlm.errors import DataError
from tailorlm.models.engines.base import Completion, GenerationParams, Request, Usage

pytestmark = pytest.mark.unit

QUESTIONS = [
    "What is a big problem for a small city?",
    "Explain the main idea of this story quickly.",
    "Give an example of a strange mistake.",
    "Why is a fast car often a bad choice for kids?",
]


def chats(n: int = 4) -> Dataset:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})"},
                {"role": "assistant", "content": f"A good answer {i}."},
            ]
        }
        for i in range(n)
    ]
    return Dataset.from_dicts(rows, "chat")


class FakeEngine:
    """An Engine whose rewrite is a pure function of the prompt and the seed; it records every call."""

    name = "fake"

    def __init__(self, rewrite: Any) -> None:
        self.rewrite = rewrite
        self.calls: list[tuple[list[str], GenerationParams]] = []

    def generate(self, requests: Sequence[Any], params: GenerationParams | None = None, **_: Any) -> list[Completion]:
        prompts = [Request.of(r).messages[-1]["content"] for r in requests]  # type: ignore[index]
        self.calls.append((prompts, params or GenerationParams()))
        return [Completion(text=self.rewrite(p, params), finish_reason="stop", usage=Usage()) for p in prompts]


def _key(row: dict) -> str:
    return json.dumps(row, sort_keys=True)


def _text_of(prompt: str) -> str:
    return prompt.rpartition("Text: ")[2]


def test_synonym_replacement_is_deterministic_per_seed_and_record() -> None:
    ds = chats(8)
    first = augment(ds, "synonym", n=2, seed=3, rate=0.3)
    again = augment(ds, "synonym", n=2, seed=3, rate=0.3)
    assert first.dataset.to_dicts() == again.dataset.to_dicts() and first.made > 0
    other_seed = augment(ds, "synonym", n=2, seed=4, rate=0.3)
    assert other_seed.dataset.to_dicts() != first.dataset.to_dicts()
    # The same record gets the same copies whatever the order of the file around it.
    reversed_ds = Dataset(list(reversed(ds.records)), kind="chat")
    shuffled = augment(reversed_ds, "synonym", n=2, seed=3, rate=0.3).dataset
    assert sorted(map(_key, shuffled.to_dicts())) == sorted(map(_key, first.dataset.to_dicts()))


def test_synonym_replace_keeps_case_punctuation_and_articles() -> None:
    table = {"strange": ["unusual"], "big": ["huge"]}
    out = synonym_replace("A strange, BIG thing!", random.Random(0), rate=1.0, table=table)
    assert out == "An unusual, HUGE thing!"
    assert synonym_replace("nothing to swap here", random.Random(0), table=table) == "nothing to swap here"
    full = synonym_table()
    assert "large" in full["big"] and "big" in full["large"] and "big" not in full["big"]


def test_augmented_records_are_tagged_and_survive_a_round_trip(tmp_path: Path) -> None:
    ds = chats(4)
    result = augment(ds, "synonym", n=1, seed=0, rate=0.5)
    originals, made = result.dataset.records[:4], result.dataset.records[4:]
    assert [r.messages for r in originals] == [r.messages for r in ds] and len(made) == result.made > 0
    ids = set(ds.record_ids)
    for record in made:
        tag = record.metadata["augmented"]
        assert tag["method"] == "synonym" and tag["source_id"] in ids and tag["index"] == 0
        source = ds[ds.record_ids.index(tag["source_id"])]
        # only the user turn was rewritten; the system message and the answer are the source's
        assert record.messages[0] == source.messages[0] and record.messages[2] == source.messages[2]
        assert record.messages[1].content != source.messages[1].content
    path = write_jsonl(result.dataset, tmp_path / "aug.jsonl")
    loaded = load_dataset(path)
    assert loaded.format == "openai" and loaded.to_dicts() == result.dataset.to_dicts()
    assert loaded.augmented_sources[:4] == [None] * 4 and all(loaded.augmented_sources[4:])
    # augmenting the augmented file again only augments the originals: source_id always names an original
    twice = augment(loaded, "synonym", n=1, seed=1, rate=0.5)
    assert {r.metadata["augmented"]["source_id"] for r in twice.dataset.records[len(loaded) :]} <= ids


def test_paraphrase_goes_through_the_engine_with_one_seed_per_copy() -> None:
    engine = FakeEngine(lambda p, params: f'Paraphrase: "{_text_of(p).upper()} v{params.seed}"')
    result = augment(chats(3), "paraphrase", engine=engine, n=2, seed=10)
    assert [c[1].seed for c in engine.calls] == [10, 11]  # one batched call per copy, each with its seed
    assert len(engine.calls[0][0]) == 3 and all(p.startswith("Paraphrase the text") for p in engine.calls[0][0])
    made = result.dataset.records[3:]
    assert len(made) == 6
    # the "Paraphrase:" label and the quotes are cleaned off; copy k was sampled with seed 10 + k
    assert [m.messages[1].content for m in made[:3]] == [f"{QUESTIONS[i].upper()} (#{i}) v10" for i in range(3)]
    assert made[3].messages[1].content.endswith("v11") and made[3].metadata["augmented"]["index"] == 1
    assert made[0].metadata["augmented"]["engine"] == "fake"


def test_backtranslation_uses_two_prompts_through_the_pivot() -> None:
    def translate(prompt: str, params: GenerationParams) -> str:
        text = _text_of(prompt)
        return f"[fr] {text}" if "into French" in prompt else text.removeprefix("[fr] ") + " (back)"

    engine = FakeEngine(translate)
    result = augment(chats(2), "backtranslate", engine=engine, n=1, pivot="French")
    assert len(engine.calls) == 2
    assert all("into French" in p for p in engine.calls[0][0]) and all("into English" in p for p in engine.calls[1][0])
    made = result.dataset.records[2:]
    assert [m.messages[1].content for m in made] == [f"{QUESTIONS[i]} (#{i}) (back)" for i in range(2)]
    assert made[0].metadata["augmented"]["pivot"] == "French"


def test_unchanged_duplicate_and_empty_rewrites_are_skipped() -> None:
    same = augment(chats(2), "paraphrase", engine=FakeEngine(lambda p, _: _text_of(p)), n=1)
    assert same.made == 0 and same.skipped["unchanged"] == 2
    constant = augment(chats(2), "paraphrase", engine=FakeEngine(lambda p, _: _text_of(p) + "!"), n=3)
    assert constant.made == 2 and constant.skipped["duplicate"] == 4
    empty = augment(chats(2), "paraphrase", engine=FakeEngine(lambda p, _: "  "), n=1)
    assert empty.made == 0 and empty.skipped["empty"] == 2


def test_refusals() -> None:
    with pytest.raises(DataError, match="needs an engine"):
        augment(chats(2), "paraphrase")
    with pytest.raises(DataError, match="unknown augmentation method"):
        augment(chats(2), "shuffle")  # type: ignore[arg-type]
    prefs = Dataset.from_dicts([{"prompt": "a", "chosen": "b", "rejected": "c"}], "preference")
    with pytest.raises(DataError, match="chat or text"):
        augment(prefs, "synonym")


def test_clean_generation() -> None:
    assert clean_generation('Paraphrase: "Hello there."\n\nI kept the meaning.', "Hi there.") == "Hello there."
    assert clean_generation("line one\nline two", "a\nb") == "line one\nline two"


def test_split_keeps_augmented_records_in_train_with_their_source() -> None:
    ds = chats(40)
    augmented = augment(ds, "synonym", n=2, seed=0, rate=0.5).dataset
    assert len(augmented) > 60
    train, held_out = augmented.split(0.25, seed=7)
    plain_train, plain_eval = ds.split(0.25, seed=7)
    # The originals split exactly as without augmentation: augmentation never moves an eval item.
    assert held_out.to_dicts() == plain_eval.to_dicts() and len(held_out) == 10
    assert not any(held_out.augmented_sources)
    eval_ids, train_original_ids = set(held_out.record_ids), set(plain_train.record_ids)
    sources = [s for s in train.augmented_sources if s]
    assert sources and all(s in train_original_ids for s in sources)
    assert not eval_ids & set(sources)  # no paraphrase of an eval record is trained on
    # every augmentation of a train original is kept
    expected = sum(1 for s in augmented.augmented_sources if s in train_original_ids)
    assert len(sources) == expected and len(train) == 30 + expected


def test_sft_eval_split_of_an_augmented_file_has_no_leak(tmp_path: Path) -> None:
    """SFT holds out ``eval_fraction`` of its data with ``Dataset.split``: the same guarantee holds for its split."""
    path = write_jsonl(augment(chats(20), "synonym", n=1, seed=0, rate=0.5).dataset, tmp_path / "aug.jsonl")
    train, held_out = load_dataset(path).split(0.1, seed=0)  # what build_trainer calls with the recipe's seed
    assert len(held_out) == 2 and not any(held_out.augmented_sources)
    assert not set(held_out.record_ids) & {s for s in train.augmented_sources if s}
