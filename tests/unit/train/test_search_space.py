"""The search space: dotted recipe paths checked against the recipe, values checked by building it, sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tailorlm.core.config import load_config
from tailorlm.errors import ConfigError
from tailorlm.train.search_space import SearchSpace, check_path, check_space, load_space
from tailorlm.train.sft import SFTRecipe

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
RECIPE_OVERRIDES = ["data.path=x.jsonl"]


def _space(tmp_path: Path, params: dict, **extra: object) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": params, **extra}))
    return path


def test_unknown_path_names_the_file_the_key_and_a_suggestion(tmp_path: Path) -> None:
    path = _space(tmp_path, {"training.learnig_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}})
    with pytest.raises(ConfigError) as err:
        load_space(path, SFTRecipe)
    assert str(path) in err.value.message and "params.training.learnig_rate" in err.value.message
    assert "did you mean 'training.learning_rate'" in err.value.message
    assert "learning_rate" in (err.value.hint or "")


def test_a_section_or_a_path_through_a_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="is a section"):
        check_path(SFTRecipe, "training", "space.yaml")
    with pytest.raises(ConfigError, match="is a value"):
        check_path(SFTRecipe, "model.name", "space.yaml")
    check_path(SFTRecipe, "eval_data.path", "space.yaml")  # through an Optional model


def test_values_are_checked_by_building_the_recipe(tmp_path: Path) -> None:
    space = load_config(
        SearchSpace, _space(tmp_path, {"training.learning_rate": {"type": "float", "low": 0, "high": 1}})
    )
    with pytest.raises(ConfigError) as err:
        check_space(space, SFTRecipe, None, RECIPE_OVERRIDES, "space.yaml")
    assert "space.yaml: params.training.learning_rate: the value 0.0" in err.value.message
    bad_method = load_config(
        SearchSpace, _space(tmp_path, {"strategy.method": {"type": "categorical", "choices": ["lora", "lorra"]}})
    )
    with pytest.raises(ConfigError, match="'lorra' does not fit"):
        check_space(bad_method, SFTRecipe, None, RECIPE_OVERRIDES, "space.yaml")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "float", "low": 1.0}, "needs low and high"),
        ({"type": "float", "low": 0, "high": 1, "log": True}, "log: true needs low > 0"),
        ({"type": "float", "low": 2, "high": 1}, "above high"),
        ({"type": "int", "low": 1.5, "high": 3}, "integer"),
        ({"type": "categorical", "choices": []}, "non-empty"),
        ({"type": "categorical", "choices": [1, 1]}, "repeat"),
        ({"type": "categorical", "choices": [1], "low": 0}, "not categorical"),
        ({"type": "float", "lo": 0, "high": 1}, "unknown key"),
    ],
)
def test_malformed_parameters(tmp_path: Path, spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(SearchSpace, _space(tmp_path, {"training.epochs": spec}))


def test_enqueued_points_must_be_in_the_space(tmp_path: Path) -> None:
    params = {"strategy.r": {"type": "categorical", "choices": [4, 8]}}
    with pytest.raises(ConfigError, match="is not in"):
        load_config(SearchSpace, _space(tmp_path, params, enqueue=[{"strategy.r": 16}]))
    with pytest.raises(ConfigError, match="is not one of params"):
        load_config(SearchSpace, _space(tmp_path, params, enqueue=[{"strategy.alpha": 16}]))


def test_suggest_maps_named_choices_to_recipe_values(tmp_path: Path) -> None:
    import optuna

    params = {
        "training.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "strategy.r": {"type": "int", "low": 4, "high": 64, "log": True},
        "strategy.target_modules": {
            "type": "categorical",
            "choices": {"attn": ["q_proj", "v_proj"], "all": "all-linear"},
        },
    }
    space = load_config(SearchSpace, _space(tmp_path, params))
    trial = optuna.trial.FixedTrial(
        {"training.learning_rate": 3e-4, "strategy.r": 8, "strategy.target_modules": "attn"}
    )
    values = space.suggest(trial)
    assert values == {"training.learning_rate": 3e-4, "strategy.r": 8, "strategy.target_modules": ["q_proj", "v_proj"]}
    recipe = load_config(SFTRecipe, None, [*RECIPE_OVERRIDES, *space.overrides(values)])
    assert recipe.strategy.target_modules == ["q_proj", "v_proj"] and recipe.strategy.r == 8
    assert recipe.learning_rate == 3e-4


def test_every_shipped_search_space_fits_the_lora_recipe() -> None:
    spaces = sorted((REPO / "recipes").glob("search-*.yaml"))
    assert spaces
    for path in spaces:
        space = load_space(path, SFTRecipe)
        check_space(space, SFTRecipe, REPO / "recipes" / "sft-lora.yaml", [], str(path))
