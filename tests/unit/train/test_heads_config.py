"""Head recipe and data: defaults, strict keys, every classify recipe loads, labels map to ids, clear data errors,
and the System's `head` field round-trips without moving the fingerprint of Systems that have none."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tailorlm.core.config import load_config
from tailorlm.core.system import HeadSpec, System
from tailorlm.errors import ConfigError, DataError
from tailorlm.train.heads import HEAD_LEARNING_RATES, HEAD_METHODS, HeadRecipe
from tailorlm.train.heads.config import HeadData
from tailorlm.train.heads.data import infer_labels, label_ids, load_examples

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def test_defaults_and_learning_rates() -> None:
    recipe = HeadRecipe(data={"path": "x.tsv"})
    assert (recipe.model, recipe.problem, recipe.strategy.method, recipe.calibrate) == (
        "default",
        "classification",
        "lora",
        True,
    )
    assert recipe.learning_rate == 5e-4
    assert set(HEAD_LEARNING_RATES) == HEAD_METHODS
    full = load_config(HeadRecipe, None, ["data.path=x.tsv", "strategy.method=full", "training.learning_rate=3e-5"])
    assert full.learning_rate == 3e-5


def test_every_classify_recipe_loads() -> None:
    recipes = sorted((REPO / "recipes").glob("classify-*.yaml"))
    assert recipes
    for path in recipes:
        recipe = load_config(HeadRecipe, path)
        assert recipe.strategy.method in HEAD_METHODS


def test_recipe_errors() -> None:
    with pytest.raises(ConfigError, match=r"training\.lerning_rate"):
        load_config(HeadRecipe, None, ["data.path=x.tsv", "training.lerning_rate=1e-4"])
    with pytest.raises(ConfigError, match="not supported for heads"):
        load_config(HeadRecipe, None, ["data.path=x.tsv", "strategy.method=prompt_tuning"])
    with pytest.raises(ConfigError, match="distinct"):
        load_config(HeadRecipe, None, ["data.path=x.tsv", "labels=[a, a]"])
    with pytest.raises(ConfigError, match="regression"):
        load_config(HeadRecipe, None, ["data.path=x.tsv", "problem=regression", "labels=[a, b]"])


def _tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{t}\t{y}\n" for t, y in rows))
    return path


def test_sst2_style_tsv_loads_and_ids_map_to_names(tmp_path: Path) -> None:
    path = _tsv(tmp_path / "train.tsv", [("a fine film .", "1"), ("dull .", "0"), ("great .", "1")])
    ex = load_examples(HeadData(path=str(path), columns=["text", "label"]), "classification")
    assert ex.texts == ["a fine film .", "dull .", "great ."] and ex.targets == [1, 0, 1]
    assert label_ids(ex, ["negative", "positive"], "training") == [1, 0, 1]
    assert infer_labels(ex.targets) == ["0", "1"]


def test_names_and_integer_names(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"review": t, "stars": y}) + "\n" for t, y in [("x", 3), ("y", 1), ("z", 2)]))
    ex = load_examples(HeadData(path=str(path), text_field="review", label_field="stars"), "classification")
    # Integers that are class names map by name ("1" is class 0 here), not as ids.
    assert label_ids(ex, ["1", "2", "3"], "training") == [2, 0, 1]
    with pytest.raises(
        DataError, match=r"d\.jsonl: 2 eval label\(s\) are not among the classes.*record 1: 3; record 3: 2"
    ):
        label_ids(ex, ["neg", "pos"], "eval")


def test_a_missing_label_column_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("text,sentiment\ngood,1\nbad,0\n")
    with pytest.raises(DataError) as err:
        load_examples(HeadData(path=str(path)), "classification", where="eval_data")
    message = str(err.value)
    assert str(path) in message and "'label'" in message and "eval_data.label_field" in message
    assert "'sentiment'" in message  # what the file does have


def test_regression_targets_are_numbers_with_line_numbered_errors(tmp_path: Path) -> None:
    good = tmp_path / "r.jsonl"
    good.write_text('{"text": "a", "label": 0.5}\n{"text": "b", "label": "2"}\n')
    assert load_examples(HeadData(path=str(good)), "regression").targets == [0.5, 2.0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 0.5}\n{"text": "b", "label": "high"}\n{"text": "", "label": true}\n')
    with pytest.raises(DataError) as err:
        load_examples(HeadData(path=str(bad)), "regression")
    issues = [str(i) for i in err.value.issues]
    assert any(i.startswith(f"{bad}:2: label:") for i in issues)
    assert any(i.startswith(f"{bad}:3: text:") for i in issues) and any(
        i.startswith(f"{bad}:3: label:") for i in issues
    )


def test_limit_is_a_seeded_sample(tmp_path: Path) -> None:
    path = _tsv(tmp_path / "t.tsv", [(f"s{i}", str(i % 2)) for i in range(50)])
    spec = HeadData(path=str(path), columns=["text", "label"], limit=10)
    a, b = load_examples(spec, "classification", seed=0), load_examples(spec, "classification", seed=0)
    assert len(a) == 10 and a.texts == b.texts
    assert load_examples(spec, "classification", seed=1).texts != a.texts


def test_system_head_round_trips_and_leaves_headless_fingerprints_alone(tmp_path: Path) -> None:
    s = System(name="clf", head=HeadSpec(labels=["negative", "positive"], temperature=1.7, max_length=64))
    assert System.load(s.save(tmp_path)) == s
    assert s.fingerprint() != s.model_copy(update={"head": None}).fingerprint()
    plain = System(name="p")
    content = plain.model_dump(mode="json", exclude={"name", "parent", "created_by", "head", "agent"})
    expected = hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert plain.fingerprint() == expected
    with pytest.raises(ValueError, match="distinct"):
        HeadSpec(labels=["only"])
