"""Curriculum: easy→hard order by length or by the base model's loss; the Trainer trains in exactly that order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.errors import ConfigError
from tailorlm.train.curriculum import curriculum_order, row_losses
from tailorlm.train.sft import SFTRecipe
from tailorlm.train.sft.recipe import build_trainer

pytestmark = pytest.mark.unit

# Distinct lengths in a scrambled order, so that any order but the sorted one is visible.
REPEATS = [5, 1, 7, 3, 8, 2, 6, 4]


def test_order_is_stable_and_reversible() -> None:
    scores = [3.0, 1.0, 2.0, 1.0]
    assert curriculum_order(scores) == [1, 3, 2, 0]  # ties keep data order
    assert curriculum_order(scores, reverse=True) == [0, 2, 1, 3]  # ties keep data order when reversed too


def test_config_refuses_packing_and_a_reverse_without_a_curriculum() -> None:
    base = ["data.path=x.jsonl"]
    assert load_config(SFTRecipe, None, base).training.curriculum == "none"  # the shuffled default
    with pytest.raises(ConfigError, match="packing"):
        load_config(SFTRecipe, None, [*base, "training.curriculum=length", "training.packing=true"])
    with pytest.raises(ConfigError, match="needs a curriculum"):
        load_config(SFTRecipe, None, [*base, "training.curriculum_reverse=true"])
    with pytest.raises(ConfigError, match="curriculum"):
        load_config(SFTRecipe, None, [*base, "training.curriculum=lenght"])


def _trainer(tmp_path: Path, model: Path, *overrides: str) -> Any:
    data = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "hello world " * n}, {"role": "assistant", "content": "four"}]}
        for n in REPEATS
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_config(
        SFTRecipe,
        None,
        [
            f"model={model}",
            f"data.path={data}",
            "eval_fraction=0",
            "training.batch_size=2",
            "training.max_steps=4",  # one epoch of 8 rows
            "canaries.enabled=false",
            *overrides,
        ],
    )
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        trainer, *_ = build_trainer(recipe, run)
    return trainer


def _trained_lengths(trainer: Any) -> list[int]:
    """The token count of every row the model is trained on, in the order training feeds them."""
    seen: list[int] = []

    compute_loss = trainer.compute_loss

    def recording(model: Any, inputs: dict, *args: Any, **kwargs: Any) -> Any:
        if model.training:
            seen.extend(inputs["attention_mask"].sum(dim=1).tolist())
        return compute_loss(model, inputs, *args, **kwargs)

    # compute_loss sees every training batch, whichever path then computes the loss (train/sft/answer_loss.py).
    trainer.compute_loss = recording
    trainer.train()
    return seen


@pytest.mark.integration
@pytest.mark.parametrize("reverse", [False, True])
def test_trainer_sees_rows_sorted_by_length(tmp_path: Path, tiny_model_dir: Path, reverse: bool) -> None:
    trainer = _trainer(
        tmp_path, tiny_model_dir, "training.curriculum=length", f"training.curriculum_reverse={reverse}"
    )
    assert trainer.args.train_sampling_strategy == "sequential"
    seen = _trained_lengths(trainer)
    assert len(seen) == len(REPEATS) and len(set(seen)) == len(REPEATS)
    assert seen == sorted(seen, reverse=reverse)


@pytest.mark.integration
def test_loss_curriculum_follows_the_base_models_loss(tmp_path: Path, tiny_model_dir: Path) -> None:
    trainer = _trainer(tmp_path, tiny_model_dir, "training.curriculum=loss")
    # Scored again from scratch (adapters off, no grad): the dataset's order is the order of rising loss.
    losses = row_losses(trainer.model, trainer.train_dataset, trainer.data_collator, batch_size=3)
    assert losses == sorted(losses) and len(set(losses)) > 1
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    assert _trained_lengths(trainer) == lengths  # the sampler walks that order


@pytest.mark.integration
def test_no_curriculum_keeps_the_shuffled_default(tmp_path: Path, tiny_model_dir: Path) -> None:
    # By default batches are grouped by length (shuffled megabatches, sorted inside); without grouping, shuffled.
    assert _trainer(tmp_path, tiny_model_dir).args.train_sampling_strategy == "group_by_length"
    (tmp_path / "plain").mkdir()
    trainer = _trainer(tmp_path / "plain", tiny_model_dir, "training.group_by_length=false")
    assert trainer.args.train_sampling_strategy == "random"
    seen = _trained_lengths(trainer)
    assert sorted(seen) == sorted(len(ids) for ids in trainer.train_dataset["input_ids"])
    assert seen != sorted(seen)  # seed 0 shuffles these 8 rows out of order
