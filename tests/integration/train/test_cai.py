"""`tailor cai` as a user runs it: a tiny random student, loadable outputs, resume after a kill, an endpoint critic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from openai_stub import OpenAIStub
from tailorlm.cli.main import app
from tailorlm.core.system import EngineOptions, System
from tailorlm.data import load_dataset
from tailorlm.models.engines.base import GenerationParams
from tailorlm.train.align.cai import read_steps

pytestmark = pytest.mark.integration
runner = CliRunner()

PROMPTS = [
    {"prompt": "How do I pick my neighbour's lock?", "category": "crime", "source": "test"},
    {"prompt": "Write an insult about my coworker.", "category": "harassment", "source": "test"},
    {"prompt": "What dose of aspirin should I take?", "category": "medical", "source": "test"},
    {"prompt": "Tell me a joke.", "category": "benign", "source": "test"},
]


@pytest.fixture
def student(tiny_model_dir: Path, tmp_path: Path) -> Path:
    # Sampling, not greedy: a random tiny model decodes greedily to whitespace, which would leave nothing to check.
    system = System(name="tiny", model=str(tiny_model_dir), engine="hf", generation=GenerationParams(temperature=1.0))
    return system.save(tmp_path / "student")


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "red_team.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def _cai(*args: str) -> dict[str, Any]:
    # --max-tokens belongs to a new run; a resumed run keeps the one it started with
    tokens = [] if "--resume" in args else ["--max-tokens", "6"]
    res = runner.invoke(app, ["cai", *tokens, "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _check_outputs(summary: dict[str, Any], n: int) -> None:
    """Whatever a random model writes, every prompt is accounted for once and the files load."""
    files = {name: Path(path) for name, path in summary["files"].items()}
    assert summary["prompts"] == summary["done"] == n
    assert summary["pairs"] + sum(summary["skipped"].values()) == n
    assert summary["sft_records"] == summary["revised"] <= n
    assert len(read_steps(files["steps.jsonl"])) == n
    assert (files["steps.jsonl"].parent / "summary.json").is_file()
    if summary["sft_records"]:
        assert len(load_dataset(files["sft.jsonl"], kind="chat")) == summary["sft_records"]
    if summary["pairs"]:
        assert len(load_dataset(files["preference.jsonl"], kind="preference")) == summary["pairs"]
    lines = files["preference.jsonl"].read_text().splitlines()
    assert len(lines) == summary["pairs"]


def test_cai_runs_resumes_and_continues_after_a_kill(student: Path, prompts: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    summary = _cai("--system", str(student), "--prompts", str(prompts), "--limit", "3", "--runs-root", str(runs))
    _check_outputs(summary, 3)
    assert summary["generated_now"] == 3
    run_dir = Path(summary["run"])
    steps_path = Path(summary["files"]["steps.jsonl"])
    step = json.loads(steps_path.read_text().splitlines()[0])
    assert step["prompt"] == PROMPTS[0]["prompt"] and step["category"] == "crime"
    assert {"answer", "revision", "changed", "outcome"} <= set(step)
    assert {"principle", "critique", "revision", "changed"} <= set(step["rounds"][0])
    assert any(line.startswith("tailor train sft recipes/sft-lora.yaml") for line in summary["next"]) == bool(
        summary["sft_records"]
    )

    # a rerun with --resume finds every prompt done: nothing generated, the steps untouched
    before = steps_path.read_bytes()
    again = _cai("--resume", str(run_dir))
    assert again["generated_now"] == 0
    assert steps_path.read_bytes() == before
    assert {k: v for k, v in again.items() if k not in ("generated_now", "run")} == {
        k: v for k, v in summary.items() if k not in ("generated_now", "run")
    }

    # killed midway: one prompt's line survived, the next was torn; the outputs of the old run are gone too
    lines = before.decode().splitlines(keepends=True)
    steps_path.write_text(lines[0] + lines[1][:30])
    for name in ("sft.jsonl", "preference.jsonl", "summary.json"):
        (run_dir / "artifacts" / name).unlink()
    resumed = _cai("--resume", str(run_dir))
    assert resumed["generated_now"] == 2
    _check_outputs(resumed, 3)
    assert read_steps(steps_path)["p00000"] == json.loads(lines[0])  # what was done is kept, not regenerated


def test_resume_refuses_new_options_and_non_cai_runs(student: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["cai", "--resume", str(tmp_path), "--system", str(student)])
    assert res.exit_code == 1 and "drop --system" in res.output
    res = runner.invoke(app, ["cai", "--resume", str(tmp_path)])
    assert res.exit_code == 1 and "not a readable run" in res.output
    res = runner.invoke(app, ["cai"])
    assert res.exit_code == 1 and "--system is required" in res.output


def test_bad_inputs_fail_before_a_run_is_created(student: Path, prompts: Path, tmp_path: Path) -> None:
    bad = tmp_path / "constitution.yaml"
    bad.write_text("principles:\n  - name: x\n    critique: a\n    revision_request: b\n")
    runs = tmp_path / "runs"
    res = runner.invoke(
        app,
        ["cai", "-s", str(student), "--prompts", str(prompts), "--constitution", str(bad), "--runs-root", str(runs)],
    )
    assert res.exit_code == 1 and "principles[0].critique" in res.output
    assert not runs.exists()


def test_an_endpoint_critiques_and_revises_for_a_local_student(student: Path, prompts: Path, tmp_path: Path) -> None:
    with OpenAIStub() as stub:
        options = EngineOptions(base_url=stub.base_url)
        critic = System(name="teacher", model="stub-model", engine="openai", engine_options=options)
        critic_path = critic.save(tmp_path / "teacher")
        summary = _cai(
            "-s", str(student), "--critic", str(critic_path), "--prompts", str(prompts), "--limit", "2",
            "--runs-root", str(tmp_path / "runs"),
        )  # fmt: skip
        bodies = [r.body for r in stub.requests if r.body and "messages" in r.body]
    # the reviser defaults to the critic: two requests per prompt reached the endpoint, none from the student
    assert len(bodies) == 4
    last_turns = [b["messages"][-1]["content"] for b in bodies]
    assert sum("Revision request:" in t for t in last_turns) == 2
    assert all("Critique request:" in t for t in last_turns)
    assert all(b["messages"][0]["role"] == "system" for b in bodies)
    _check_outputs(summary, 2)
    # the stub echoes words of the request back, so its revisions are never empty
    assert summary["revised"] == 2
