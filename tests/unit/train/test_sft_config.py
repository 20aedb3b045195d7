"""SFT recipe config: defaults with sources, strict keys, freeze validation, data conversion, checkpoint choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailorlm.core.config import load_config
from tailorlm.data import Dataset
from tailorlm.errors import ConfigError
from tailorlm.train.sft import DEFAULT_LEARNING_RATES, SFTRecipe, latest_checkpoint
from tailorlm.train.sft.config import Method
from tailorlm.train.sft.recipe import common_system_message, to_trl_rows

REPO = Path(__file__).resolve().parents[3]


def test_defaults_follow_the_lora_paper() -> None:
    recipe = SFTRecipe(data={"path": "x.jsonl"})
    assert recipe.strategy.method == "lora"
    assert (recipe.strategy.r, recipe.strategy.alpha, recipe.strategy.dropout) == (16, 32, 0.05)
    assert recipe.strategy.target_modules == "all-linear"
    assert recipe.learning_rate == 2e-4


def test_every_method_has_a_default_learning_rate() -> None:
    from typing import get_args

    assert set(get_args(Method)) == set(DEFAULT_LEARNING_RATES)
    full = load_config(SFTRecipe, None, ["data.path=x.jsonl", "strategy.method=full"])
    assert full.learning_rate == 1e-5
    explicit = load_config(SFTRecipe, None, ["data.path=x.jsonl", "training.learning_rate=3e-4"])
    assert explicit.learning_rate == 3e-4


def test_unknown_key_in_yaml_names_the_key_and_suggests(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("data: {path: x.jsonl}\ntraining:\n  lerning_rate: 1e-4\n")
    with pytest.raises(ConfigError) as err:
        load_config(SFTRecipe, path)
    assert "training.lerning_rate" in str(err.value)
    assert "learning_rate" in str(err.value).split("did you mean")[1]


def test_freeze_needs_a_choice_and_only_freeze_takes_one() -> None:
    with pytest.raises(ConfigError, match="train_top_n_blocks"):
        load_config(SFTRecipe, None, ["data.path=x.jsonl", "strategy.method=freeze"])
    with pytest.raises(ConfigError, match="freeze' and the lora family"):
        load_config(SFTRecipe, None, ["data.path=x.jsonl", "strategy.method=ia3", "strategy.train_top_n_blocks=2"])
    with pytest.raises(ConfigError, match="only applies"):
        load_config(SFTRecipe, None, ["data.path=x.jsonl", "strategy.trainable_modules=[mlp]"])
    top = load_config(SFTRecipe, None, ["data.path=x.jsonl", "strategy.train_top_n_blocks=2"])
    assert (top.strategy.method, top.strategy.train_top_n_blocks) == ("lora", 2)  # adapters in the last 2 blocks
    ok = load_config(
        SFTRecipe, None, ["data.path=x.jsonl", "strategy.method=freeze", "strategy.trainable_modules=[mlp]"]
    )
    assert ok.strategy.trainable_modules == ["mlp"]


def test_every_recipe_yaml_loads() -> None:
    recipes = sorted((REPO / "recipes").glob("sft-*.yaml"))
    assert recipes
    for path in recipes:
        assert load_config(SFTRecipe, path).strategy.method


def test_chat_records_become_prompt_completion_rows() -> None:
    ds = Dataset.from_dicts(
        [
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "4"},
                ]
            }
        ],
        "chat",
    )
    rows = to_trl_rows(ds)
    assert rows[0]["completion"] == [{"role": "assistant", "content": "4"}]
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user", "assistant", "user"]
    assert common_system_message(rows) == "Be brief."
    text = to_trl_rows(Dataset.from_dicts([{"text": "plain"}], "text"))
    assert text == [{"text": "plain"}]


def test_latest_checkpoint_skips_incomplete_folders(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    for step, complete in ((2, True), (4, True), (6, False), (10, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


@pytest.mark.unit
def test_overriding_one_canary_field_keeps_the_training_defaults() -> None:
    # A dotted override builds the block from scratch; the training defaults must not fall back to CanarySpec's.
    recipe = load_config(SFTRecipe, None, ["data.path=x.jsonl", "canaries.limit=20"])
    assert (recipe.canaries.enabled, recipe.canaries.limit, recipe.canaries.max_drop) == (True, 20, 0.02)
