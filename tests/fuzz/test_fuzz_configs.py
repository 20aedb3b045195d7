"""Fuzz config parsing: ``task.yaml``, ``system.yaml`` and the training recipes, with dotted overrides.

The property: ``load_config`` (through ``Task.load``, ``System.load`` and the recipe classes) returns a
validated model, or raises a ``ConfigError`` whose every line names where the bad value came from (the file,
or ``command line``). Any other exception is a bug.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fuzz.fuzz_helpers import budget, counted, json_values, mutated_bytes, nasty_text
from tailorlm.core.config import load_config
from tailorlm.core.system import System
from tailorlm.core.task import Task
from tailorlm.errors import ConfigError
from tailorlm.train.heads.config import HeadRecipe
from tailorlm.train.pretrain.config import PretrainRecipe
from tailorlm.train.search_space import SearchSpace
from tailorlm.train.sft.config import SFTRecipe

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SYSTEM_YAML = b"""name: fuzz
model: default
engine: hf
prompt:
  system: You are terse.
  template: "Q: {{ input }}"
generation: {max_new_tokens: 16}
"""
# (model class, real file) pairs: every shipped task.yaml and recipe, plus a hand-written system.yaml.
TARGETS: list[tuple[type[BaseModel], str, bytes]] = [
    *((Task, str(p.relative_to(REPO)), p.read_bytes()) for p in sorted((REPO / "examples").glob("*/task.yaml"))),
    (SFTRecipe, "recipes/sft-lora.yaml", (REPO / "recipes/sft-lora.yaml").read_bytes()),
    (SFTRecipe, "recipes/sft-raft.yaml", (REPO / "recipes/sft-raft.yaml").read_bytes()),
    (PretrainRecipe, "recipes/pretrain-lora.yaml", (REPO / "recipes/pretrain-lora.yaml").read_bytes()),
    (PretrainRecipe, "recipes/pretrain-full.yaml", (REPO / "recipes/pretrain-full.yaml").read_bytes()),
    (HeadRecipe, "recipes/classify-sst2-lora.yaml", (REPO / "recipes/classify-sst2-lora.yaml").read_bytes()),
    (SearchSpace, "recipes/search-lora.yaml", (REPO / "recipes/search-lora.yaml").read_bytes()),
    (System, "system.yaml", SYSTEM_YAML),
]
IDS = [name for _, name, _ in TARGETS]


def _load(cls: type[BaseModel], path: Path, overrides: list[str]) -> Any:
    if cls is Task:
        return Task.load(path, overrides)
    if cls is System:
        return System.load(path, overrides)
    return load_config(cls, path, overrides)


def _check(cls: type[BaseModel], path: Path, overrides: list[str] = ()) -> None:
    try:
        model = _load(cls, path, list(overrides))
    except ConfigError as err:
        text = str(err)
        assert text.strip()
        for line in err.message.splitlines():
            # Every line says where: the file, the command line (an override), or a value it names.
            assert str(path) in line or "command line" in line or line.startswith(("unknown metric", "metric ")), text
        return
    assert isinstance(model, cls)
    model.model_dump(mode="json")  # what a run snapshots must serialise


def _write(data: bytes, name: str = "task.yaml") -> Path:
    path = Path(tempfile.mkdtemp(prefix="fuzz-cfg-")) / Path(name).name
    path.write_bytes(data)
    return path


def test_every_real_config_loads(tmp_path: Path) -> None:
    for cls, name, data in TARGETS:
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(data)
        _load(cls, path, [])


@settings(max_examples=budget(120))
@given(st.data())
@counted("config: mutated task.yaml, system.yaml and recipes")
def test_mutated_real_configs(data: st.DataObject) -> None:
    cls, name, original = data.draw(st.sampled_from(TARGETS), label="target")
    _check(cls, _write(data.draw(mutated_bytes(original)), name))


# Dotted keys that exist somewhere in the configs, plus nonsense; values are YAML snippets or raw text.
KEYS = [
    "name", "eval.path", "eval.limit", "eval.fields.input", "metrics", "metrics[0]", "metrics.0", "generation",
    "generation.max_new_tokens", "generation.temperature", "canaries.max_drop", "ladder.rungs", "bootstrap.resamples",
    "training.learning_rate", "training.max_steps", "strategy.r", "strategy.target_modules", "data.path",
    "data.paths[3]", "model", "adapters[0].path", "prompt.template", "retrieval.index", "params.x.type",
    "a.b.c", "x[99]", "name.inner", "eval..path", ".", "[0]", "metrics[-1]",
]  # fmt: skip
VALUES = [
    "1", "-1", "0", "1e-4", "null", "true", "[a, b]", "{a: 1}", "[", "{", "]", ": x", "'", '"', "&a [*a]",
    "!!python/object:os.system ls",
    "1" * 5000, "[" * 5000, "{{ input }}", "\t", "- a", "%YAML 1.2", "---", "...", "*undefined",
]  # fmt: skip
override = st.builds(
    lambda k, sep, v: f"{k}{sep}{v}",
    st.sampled_from(KEYS) | nasty_text,
    st.sampled_from(["=", "=", "==", "", " = "]),
    st.sampled_from(VALUES) | nasty_text,
)


@settings(max_examples=budget(150))
@given(st.data())
@counted("config: dotted overrides")
def test_overrides(data: st.DataObject) -> None:
    cls, name, original = data.draw(st.sampled_from(TARGETS), label="target")
    overrides = data.draw(st.lists(override, max_size=4), label="overrides")
    _check(cls, _write(original, name), overrides)


@settings(max_examples=budget(80))
@given(st.data())
@counted("config: structured YAML with wrong types")
def test_structured_yaml(data: st.DataObject) -> None:
    cls, name, original = data.draw(st.sampled_from(TARGETS), label="target")
    base = yaml.safe_load(original) or {}
    # Replace, drop or add keys at the top level and one level down, with values of any JSON type.
    for _ in range(data.draw(st.integers(1, 4))):
        keys = list(base)
        op = data.draw(st.sampled_from(["replace", "drop", "add", "nested"]))
        if op == "replace" and keys:
            base[data.draw(st.sampled_from(keys))] = data.draw(json_values)
        elif op == "drop" and keys:
            base.pop(data.draw(st.sampled_from(keys)))
        elif op == "add":
            base[data.draw(nasty_text)] = data.draw(json_values)
        elif op == "nested" and (subs := [k for k in keys if isinstance(base[k], dict) and base[k]]):
            sub = base[data.draw(st.sampled_from(subs))]
            sub[data.draw(st.sampled_from(list(sub)))] = data.draw(json_values)
    try:
        text = yaml.safe_dump(base, allow_unicode=True)
    except yaml.YAMLError:
        return  # PyYAML cannot write it (e.g. a lone surrogate): there is no file to load
    _check(cls, _write(text.encode("utf-8", "surrogatepass"), name))


@settings(max_examples=budget(40))
@given(data=st.binary(max_size=300) | nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
@counted("config: random bytes")
def test_random_bytes(data: bytes) -> None:
    _check(Task, _write(data))
    _check(System, _write(data, "system.yaml"))


@pytest.mark.parametrize(
    ("cls", "data", "overrides"),
    [
        (Task, b"name: \xff\neval: {path: e.jsonl}\n", []),  # not UTF-8
        (Task, b"a: " + b"[" * 10_000, []),  # nested deeper than the stack
        (Task, b"name: x\neval: {path: e.jsonl}\n", ["name=" + "[" * 10_000]),
        (System, b"name: x\nmodel: " + b"a" * 300 + b"\n", []),  # a path too long for the file system
        (System, b"name: x\nmodel: default\nadapters: [{path: " + b"b" * 300 + b"}]\n", []),
    ],
)
def test_regressions(tmp_path: Path, cls: type[BaseModel], data: bytes, overrides: list[str]) -> None:
    path = tmp_path / ("task.yaml" if cls is Task else "system.yaml")
    path.write_bytes(data)
    try:
        _load(cls, path, overrides)
    except ConfigError as err:
        assert str(path) in str(err) or "command line" in str(err)
