"""`tailor init` through the real command table: the summary, --json, --force and clean errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.task import Task

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


@pytest.fixture
def qa_folder(tmp_path: Path) -> Path:
    """The bundled XQuAD task's data (eval, train, documents) without its task.yaml."""
    folder = tmp_path / "qa"
    folder.mkdir()
    for name in ("eval.jsonl", "train.jsonl"):
        shutil.copy(EXAMPLES / "xquad-qa" / name, folder / name)
    shutil.copytree(EXAMPLES / "xquad-qa" / "docs", folder / "docs")
    return folder


def test_init_writes_task_and_prints_summary_rungs_and_next_step(qa_folder: Path) -> None:
    result = runner.invoke(app, ["init", str(qa_folder)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"wrote {qa_folder / 'task.yaml'}" in out
    assert "200 examples" in out and "839 input/reference records" in out and "1 file, 240 documents" in out
    assert "exact_match, f1 (primary f1)" in out
    for title in ("zero-shot", "few-shot", "chain-of-thought", "optimized prompt", "RAG + few-shot", "LoRA SFT"):
        assert title in out
    assert "not a reasoning task" in out  # the one rung XQuAD does not get
    assert f"next: tailor ladder {qa_folder / 'task.yaml'} --plan" in out
    task = Task.load(qa_folder / "task.yaml")
    assert task.eval.path == "eval.jsonl" and task.train and task.train.path == "train.jsonl"
    assert task.documents and task.documents.path == "docs"


def test_init_json_and_options(tmp_path: Path) -> None:
    folder = tmp_path / "sentiment"
    args = ["init", str(folder), "--eval", str(EXAMPLES / "sst2" / "eval.jsonl"), "--name", "sst", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"]["name"] == "sst" and report["task"]["metrics"] == ["accuracy"]
    assert report["task"]["eval"]["path"] == str(EXAMPLES / "sst2" / "eval.jsonl")  # outside the folder: absolute
    assert report["answers"] == "label" and report["preflight"]["eval_n"] == 200
    rungs = {r["name"]: r for r in report["rungs"]}
    assert rungs["zero-shot"]["applies"] and not rungs["lora"]["applies"]
    assert "training data" in rungs["lora"]["reason"]
    assert report["next"] == f"tailor ladder {folder / 'task.yaml'} --plan"


def test_init_refuses_to_overwrite_then_force(qa_folder: Path) -> None:
    (qa_folder / "task.yaml").write_text("name: mine\n")
    result = runner.invoke(app, ["init", str(qa_folder)])
    assert result.exit_code == 1
    assert "already exists; not overwriting it" in result.output and "--force" in result.output
    assert "Traceback" not in result.output and (qa_folder / "task.yaml").read_text() == "name: mine\n"
    result = runner.invoke(app, ["init", str(qa_folder), "--force", "--json"])
    assert result.exit_code == 0, result.output
    assert Task.load(qa_folder / "task.yaml").name == "qa"


def test_init_errors_are_clean(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 1 and "no eval file in" in result.output and "--eval" in result.output
    (tmp_path / "eval.jsonl").write_text('{"question": "a?", "answer": "b"}\n{"question": "c?"\n')
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 1 and f"{tmp_path / 'eval.jsonl'}:2: (record): invalid JSON" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "task.yaml").exists()


def test_init_field_option(tmp_path: Path) -> None:
    (tmp_path / "eval.jsonl").write_text('{"q": "a?", "a": "b"}\n')
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 1 and "--field input=COLUMN" in result.output
    result = runner.invoke(app, ["init", str(tmp_path), "--field", "input=q", "--field", "reference=a"])
    assert result.exit_code == 0, result.output
    assert Task.load(tmp_path / "task.yaml").eval.fields == {"input": "q", "reference": "a"}
    result = runner.invoke(app, ["init", str(tmp_path), "--field", "input", "--force"])
    assert result.exit_code == 1 and "KEY=COLUMN" in result.output
