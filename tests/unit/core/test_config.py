"""Config loading: YAML → dotted overrides → validated model, with errors that say where and suggest a fix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from tailorlm.core.config import StrictModel, dump_config, load_config, parse_override
from tailorlm.errors import ConfigError

pytestmark = pytest.mark.unit


class Train(StrictModel):
    lr: float = Field(1e-3, description="Learning rate.")
    epochs: int = Field(1, ge=1, description="Passes over the data.")
    bf16: bool = Field(False, description="Autocast to bfloat16.")


class Source(StrictModel):
    path: str = Field(description="File.")
    weight: float = Field(1.0, description="Sampling weight.")


class Data(StrictModel):
    paths: list[str] = Field(default_factory=list, description="Input files.")
    sources: list[Source] = Field(default_factory=list, description="Weighted sources.")
    named: dict[str, Source] = Field(default_factory=dict, description="Sources by name.")


class Recipe(StrictModel):
    name: str = Field("recipe", description="Name.")
    train: Train = Field(default_factory=Train, description="Training.")
    data: Data | None = Field(None, description="Data.")
    mode: Literal["full", "lora"] = Field("lora", description="Method.")
    max_steps: int | None = Field(None, description="Step cap.")


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_yaml_and_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, "name: r1\ntrain:\n  lr: 1e-4\n  epochs: 3\ndata:\n  paths: [a.jsonl]\n")
    cfg = load_config(Recipe, p)
    assert cfg.name == "r1"
    # PyYAML alone would read `1e-4` as a string; we read it as a float.
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and cfg.train.bf16 is False
    assert cfg.data is not None and cfg.data.paths == ["a.jsonl"]


def test_empty_file_and_no_file_give_defaults(tmp_path: Path) -> None:
    assert load_config(Recipe, write(tmp_path, "")) == Recipe()
    assert load_config(Recipe) == Recipe()


def test_nested_dotted_overrides_with_type_coercion(tmp_path: Path) -> None:
    p = write(tmp_path, "train:\n  lr: 0.1\n")
    cfg = load_config(
        Recipe,
        p,
        ["train.lr=1e-4", "train.bf16=true", "train.epochs=2", "data.paths=[a,b]", "max_steps=null", "name=x y"],
    )
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.bf16 is True
    assert cfg.train.epochs == 2
    assert cfg.data is not None and cfg.data.paths == ["a", "b"]
    assert cfg.max_steps is None
    assert cfg.name == "x y"


def test_overrides_reach_into_lists_and_dicts_of_models() -> None:
    cfg = load_config(
        Recipe,
        None,
        ["data.sources=[{path: a}, {path: b}]", "data.sources[1].weight=0.5", "data.named.x.path=c"],
    )
    assert cfg.data is not None
    assert [s.weight for s in cfg.data.sources] == [1.0, 0.5]
    assert cfg.data.named["x"].path == "c"


def test_base_then_file_then_override_precedence(tmp_path: Path) -> None:
    p = write(tmp_path, "train:\n  epochs: 4\n")
    cfg = load_config(Recipe, p, ["train.lr=0.5"], base={"name": "base", "train": {"epochs": 2, "lr": 0.2}})
    assert (cfg.name, cfg.train.epochs, cfg.train.lr) == ("base", 4, 0.5)


def test_unknown_key_in_file_names_file_path_and_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, "train:\n  lrr: 1e-4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Recipe, p)
    assert exc.value.message == f"{p}: train.lrr: unknown key; did you mean 'lr'?"
    assert exc.value.hint is not None and "lr, epochs, bf16" in exc.value.hint


def test_unknown_key_inside_optional_and_list_of_models(tmp_path: Path) -> None:
    p = write(tmp_path, "data:\n  sources:\n    - path: a\n      wieght: 2\n")
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.wieght: unknown key; did you mean 'weight'\?"):
        load_config(Recipe, p)
    p = write(tmp_path, "data:\n  named:\n    x: {pth: a}\n")
    with pytest.raises(ConfigError, match=r"data\.named\.x\.pth: unknown key; did you mean 'path'\?"):
        load_config(Recipe, p)


def test_unknown_top_level_key_without_close_match(tmp_path: Path) -> None:
    p = write(tmp_path, "zzz: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Recipe, p)
    assert exc.value.message == f"{p}: zzz: unknown key"
    assert "at the top level" in str(exc.value.hint)


def test_unknown_key_from_override_says_command_line(tmp_path: Path) -> None:
    p = write(tmp_path, "train:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Recipe, p, ["train.lrr=1e-4"])
    assert exc.value.message == "command line override 'train.lrr=1e-4': train.lrr: unknown key; did you mean 'lr'?"


def test_type_error_names_path_and_expected_type(tmp_path: Path) -> None:
    p = write(tmp_path, "train:\n  epochs: many\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Recipe, p)
    assert exc.value.message.startswith(f"{p}: train.epochs: ")
    assert "expected int, got 'many'" in exc.value.message

    with pytest.raises(
        ConfigError, match=r"command line override 'mode=qlora': mode: .*expected one of 'full', 'lora'"
    ):
        load_config(Recipe, None, ["mode=qlora"])
    with pytest.raises(ConfigError, match=r"max_steps: invalid value|max_steps: .*expected int \| null"):
        load_config(Recipe, None, ["max_steps=[1]"])
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.path: required key is missing \(expected str\)"):
        load_config(Recipe, None, ["data.sources=[{weight: 1}]"])


def test_constraint_violation_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs: Input should be greater than or equal to 1"):
        load_config(Recipe, None, ["train.epochs=0"])


def test_yaml_syntax_error_reports_file_line_column(tmp_path: Path) -> None:
    p = write(tmp_path, "name: ok\ntrain:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"^{p}:\d+:\d+: YAML syntax error"):
        load_config(Recipe, p)
    p = write(tmp_path, "name: ok\n  bad: indent\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Recipe, p)
    assert exc.value.message.startswith(f"{p}:2:6: YAML syntax error")


def test_bad_overrides_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(Recipe, None, ["train.lr"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(Recipe, None, ["=3"])
    with pytest.raises(ConfigError, match="not a list"):
        load_config(Recipe, None, ["data.sources[0].path=a"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Recipe, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Recipe, write(tmp_path, "- a\n- b\n"))


def test_parse_override_values() -> None:
    assert parse_override("a.b=1e-4") == (["a", "b"], 1e-4)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=") == (["a"], "")
    assert parse_override("a=x=y") == (["a"], "x=y")
    assert parse_override("a[2].b=[1, two]") == (["a", "2", "b"], [1, "two"])


def test_validate_assignment_and_dump_is_json_safe() -> None:
    cfg = Recipe()
    with pytest.raises(ValueError):
        cfg.train.epochs = "many"  # type: ignore[assignment]
    dumped = dump_config(load_config(Recipe, None, ["data.paths=[a]"]))
    assert dumped["train"] == {"lr": 1e-3, "epochs": 1, "bf16": False}
    assert dumped["data"]["paths"] == ["a"]
    assert load_config(Recipe, base=dumped) == load_config(Recipe, None, ["data.paths=[a]"])
    assert dump_config({"p": Path("/x")}) == {"p": "/x"}
    assert dump_config(None) == {}
