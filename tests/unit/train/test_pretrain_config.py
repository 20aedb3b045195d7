"""Pretrain recipe and data: defaults, refusals, every recipe YAML loads, documents read/split/packed, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailorlm.core.config import load_config
from tailorlm.errors import ConfigError, DataError
from tailorlm.rag.types import Document
from tailorlm.train.pretrain import PretrainRecipe, TextSource
from tailorlm.train.pretrain.data import (
    PackedCollator,
    position_ids,
    read_documents,
    split_documents,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_defaults_are_high_rank_lora_with_a_cosine_decay() -> None:
    recipe = PretrainRecipe(data={"path": "corpus"})
    assert (recipe.strategy.method, recipe.strategy.r, recipe.strategy.alpha) == ("lora", 64, 128)
    assert recipe.training.lr_scheduler == "cosine" and recipe.training.max_length == 512
    assert recipe.learning_rate == 2e-4
    assert load_config(PretrainRecipe, None, ["data.path=c", "strategy.method=full"]).learning_rate == 1e-5
    assert recipe.canaries.enabled and recipe.canaries.max_drop == 0.02


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategy.method=prompt_tuning", "virtual tokens"),
        ("training.packing=false", "packing"),
        ("data.inlcude=[a]", "include"),
    ],
)
def test_refusals_name_the_problem(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainRecipe, None, ["data.path=c", override])


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("pretrain-*.yaml")), ids=lambda p: p.name)
def test_every_pretrain_recipe_loads(path: Path) -> None:
    recipe = load_config(PretrainRecipe, path, [])
    assert recipe.data.path and recipe.learning_rate > 0


def test_recipes_exist() -> None:
    assert {p.name for p in (REPO / "recipes").glob("pretrain-*.yaml")} >= {"pretrain-lora.yaml", "pretrain-full.yaml"}


def test_read_documents_honours_globs(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nalpha")
    (tmp_path / "drafts").mkdir()
    (tmp_path / "drafts" / "b.txt").write_text("beta")
    (tmp_path / "c.jsonl").write_text('{"text": "gamma"}\n{"text": "delta"}\n')
    docs = read_documents(TextSource(path=str(tmp_path), exclude=["drafts/**"]))
    assert [d.text for d in docs] == ["# A\n\nalpha", "gamma", "delta"]
    only_md = read_documents(TextSource(path=str(tmp_path), include=["**/*.md"]))
    assert [d.doc_id for d in only_md] == ["a.md"]


def test_an_empty_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notes.xyz").write_text("not a document type")
    with pytest.raises(DataError, match=f"no documents to train on in {tmp_path}"):
        read_documents(TextSource(path=str(tmp_path)))


def test_an_unreadable_file_is_an_error_naming_it_unless_skipped(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("fine text")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 latin-1")
    with pytest.raises(DataError, match=r"bad\.txt.*not valid UTF-8") as err:
        read_documents(TextSource(path=str(tmp_path)))
    assert "skip_unreadable" in str(err.value)
    docs = read_documents(TextSource(path=str(tmp_path), skip_unreadable=True))
    assert [d.text for d in docs] == ["fine text"]


def test_a_missing_path_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        read_documents(TextSource(path=str(tmp_path / "nope")))


def _docs(n: int) -> list[Document]:
    return [Document(doc_id=f"d{i}", source="s", title="t", text=f"document {i}") for i in range(n)]


def test_split_is_by_document_seeded_and_keeps_order() -> None:
    docs = _docs(20)
    train, held = split_documents(docs, 0.1, seed=0)
    assert len(held) == 2 and len(train) == 18
    assert {d.doc_id for d in train}.isdisjoint(d.doc_id for d in held)
    assert split_documents(docs, 0.1, seed=0) == (train, held)
    assert [d.doc_id for d in train] == sorted((d.doc_id for d in train), key=lambda x: int(x[1:]))
    assert split_documents(docs, 0.0, seed=0) == (docs, [])
    assert len(split_documents(_docs(3), 0.01, seed=0)[1]) == 1  # at least one document held out
    with pytest.raises(DataError, match="only 1 document"):
        split_documents(_docs(1), 0.1, seed=0)


def test_collator_restarts_positions_per_document_and_masks_starts_and_padding() -> None:
    assert position_ids([3, 2]) == [0, 1, 2, 0, 1]
    batch = PackedCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7, 8, 9], "seq_lengths": [3, 2]}, {"input_ids": [4, 3], "seq_lengths": [2]}]
    )
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 0, 0]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [4, 3, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 3, -100, -100, -100]]
    assert "attention_mask" not in batch  # transformers derives the per-document mask only without one
