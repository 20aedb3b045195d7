"""System: save/load round trip, portable paths, fingerprint, and config errors in system.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tailorlm.core.system import AdapterSpec, EngineOptions, PromptSpec, RetrieverSpec, System, is_local_spec
from tailorlm.errors import ConfigError
from tailorlm.models.engines.base import GenerationParams

pytestmark = pytest.mark.unit


def full_system(run_dir: Path) -> System:
    (run_dir / "artifacts" / "adapter").mkdir(parents=True)
    (run_dir / "artifacts" / "index").mkdir()
    return System(
        name="support",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        adapters=[AdapterSpec(path=str(run_dir / "artifacts" / "adapter"), name="sft", weight=0.5)],
        prompt=PromptSpec(
            system="Answer briefly.",
            template="Question: {{ input }}\nAnswer:",
            few_shot=[{"input": "2+2?", "output": "4"}],  # type: ignore[list-item]
        ),
        retriever=RetrieverSpec(index=str(run_dir / "artifacts" / "index"), top_k=3, reranker="bge"),
        tools=[{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
        generation=GenerationParams(max_new_tokens=64, stop=["\n\n"]),
        parent="runs/base/artifacts/system.yaml",
        created_by="20250101-000000-sft",
    )


def test_defaults() -> None:
    s = System()
    assert (s.model, s.engine, s.adapters, s.prompt, s.retriever, s.tools) == ("default", "auto", [], None, None, [])
    assert s.generation == GenerationParams()
    assert s.engine_options.api_key_env == "OPENAI_API_KEY"


def test_round_trip(tmp_path: Path) -> None:
    s = full_system(tmp_path / "run")
    path = s.save(tmp_path / "run" / "artifacts")
    assert path == tmp_path / "run" / "artifacts" / "system.yaml"
    assert System.load(path) == s
    assert System.load(path.parent) == s  # a folder holding system.yaml works too


def test_paths_inside_are_relative_on_disk_and_survive_a_move(tmp_path: Path) -> None:
    s = full_system(tmp_path / "run")
    s.save(tmp_path / "run" / "artifacts")
    raw = yaml.safe_load((tmp_path / "run" / "artifacts" / "system.yaml").read_text())
    assert raw["adapters"][0]["path"] == "adapter"
    assert raw["retriever"]["index"] == "index"
    assert raw["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id stays as is

    shutil.move(tmp_path / "run", tmp_path / "moved")
    loaded = System.load(tmp_path / "moved" / "artifacts" / "system.yaml")
    assert loaded.adapters[0].path == str(tmp_path / "moved" / "artifacts" / "adapter")
    assert loaded.retriever is not None and loaded.retriever.index == str(tmp_path / "moved" / "artifacts" / "index")
    assert Path(loaded.adapters[0].path).is_dir()
    # Paths are part of the fingerprint (another folder may hold other weights), so a move changes it.
    assert loaded.fingerprint() != s.fingerprint()
    assert (
        loaded.model_copy(update={"adapters": s.adapters, "retriever": s.retriever}).fingerprint() == s.fingerprint()
    )


def test_relative_paths_in_handwritten_yaml_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "sys" / "lora").mkdir(parents=True)
    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "sys" / "system.yaml").write_text(
        "name: x\nmodel: ../models/base\nadapters:\n  - path: lora\n  - path: org/hub-adapter\n"
    )
    s = System.load(tmp_path / "sys" / "system.yaml")
    assert s.model == str(tmp_path / "models" / "base")
    assert s.adapters[0].path == str(tmp_path / "sys" / "lora")
    assert s.adapters[1].path == "org/hub-adapter"  # does not exist locally: a hub id
    # A path outside the system's folder is written absolute, so moving the folder cannot break it.
    out = s.save(tmp_path / "elsewhere")
    raw = yaml.safe_load(out.read_text())
    assert raw["model"] == str(tmp_path / "models" / "base")
    assert raw["adapters"][0]["path"] == str(tmp_path / "sys" / "lora")
    assert System.load(out) == s


def test_local_spec_detection(tmp_path: Path) -> None:
    assert not is_local_spec("default")
    assert not is_local_spec("org/model")
    assert is_local_spec("./m") and is_local_spec("/abs") and is_local_spec("~/m")
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert is_local_spec("org/model", tmp_path)
    assert System(model="~/models/x").model == str(Path.home() / "models" / "x")


def test_unknown_key_in_system_yaml_is_config_error_with_suggestion(tmp_path: Path) -> None:
    p = tmp_path / "system.yaml"
    p.write_text("name: x\nadapters:\n  - path: a\n    wieght: 2\n")
    with pytest.raises(ConfigError, match=rf"{p}: adapters\[0\]\.wieght: unknown key; did you mean 'weight'\?"):
        System.load(p)
    p.write_text("name: x\ngeneration:\n  max_tokens: 5\n")
    with pytest.raises(ConfigError, match=r"generation\.max_tokens: unknown key; did you mean 'max_new_tokens'\?"):
        System.load(p)
    p.write_text("name: x\nengine: tgi\n")
    with pytest.raises(ConfigError, match=r"engine: .*expected one of 'auto', 'hf', 'ct2', 'openai'"):
        System.load(p)


def test_overrides_on_load(tmp_path: Path) -> None:
    path = System(name="x").save(tmp_path)
    s = System.load(path, ["generation.temperature=0.7", "engine=openai", "engine_options.base_url=http://h/v1"])
    assert s.generation.temperature == 0.7
    assert s.engine == "openai" and s.engine_options == EngineOptions(base_url="http://h/v1")


def test_template_must_use_input() -> None:
    with pytest.raises(ValueError, match="input"):
        PromptSpec(template="Answer the question.")
    assert PromptSpec(template="Q: {{input}}").template == "Q: {{input}}"


def test_retriever_keeps_urls_and_rejects_unknown_keys() -> None:
    assert RetrieverSpec(index="postgresql://u@h/db").index == "postgresql://u@h/db"
    with pytest.raises(ValueError, match="top_kk"):
        RetrieverSpec(index="idx", top_kk=3)  # type: ignore[call-arg]


def test_fingerprint_is_stable_and_ignores_metadata(tmp_path: Path) -> None:
    s = full_system(tmp_path / "run")
    assert s.fingerprint() == full_system_copy(s).fingerprint()
    assert len(s.fingerprint()) == 64
    renamed = s.model_copy(update={"name": "other", "parent": None, "created_by": None})
    assert renamed.fingerprint() == s.fingerprint()
    hotter = s.model_copy(update={"generation": GenerationParams(max_new_tokens=64, stop=["\n\n"], temperature=0.5)})
    assert hotter.fingerprint() != s.fingerprint()


def full_system_copy(s: System) -> System:
    return System.model_validate(s.model_dump())
