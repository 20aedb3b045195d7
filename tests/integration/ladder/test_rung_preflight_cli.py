"""`tailor init` and `tailor ladder` through the CLI on a task whose training file lacks a mapped answer column: init
says which rungs will not run and the column to map; the ladder refuses before any model loads when such a rung is
requested, and names the rung, the reason and the fix. No model is needed: nothing may be loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def _folder(tmp_path: Path) -> Path:
    """The issue's QA task, except that train.jsonl keeps its answers in a column init cannot guess."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "paper.txt").write_text("Attention relates every token to every other token.\n" * 20)
    answer = "attention relates every token to every other token"
    (tmp_path / "eval.jsonl").write_text(
        "".join(json.dumps({"question": f"What does part {i} show?", "answer": [answer]}) + "\n" for i in range(6))
    )
    (tmp_path / "train.jsonl").write_text(
        "".join(
            json.dumps({"question": f"What does section {i} show?", "explanation": answer}) + "\n" for i in range(6)
        )
    )
    return tmp_path


def _text(output: str) -> str:
    return " ".join(output.split())


def test_init_says_which_rungs_cannot_run_and_the_fix(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    result = runner.invoke(app, ["init", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    rungs = {r["name"]: r for r in json.loads(result.output)["rungs"]}
    assert rungs["zero-shot"]["applies"] and rungs["rag"]["applies"]
    for name in ("few-shot", "lora", "rag-lora"):
        assert not rungs[name]["applies"], rungs[name]
        assert "reference" in rungs[name]["reason"]
        assert "train.fields: {reference: COLUMN}" in rungs[name]["fix"] and "explanation" in rungs[name]["fix"]


def test_ladder_refuses_a_requested_rung_that_cannot_run_before_any_work(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    assert runner.invoke(app, ["init", str(folder)]).exit_code == 0
    out = tmp_path / "ladder"
    args = ["ladder", str(folder / "task.yaml"), "--rungs", "zero-shot,lora,rag-lora", "--out", str(out)]
    result = runner.invoke(app, [*args, "--model", str(tmp_path / "no-such-model")])  # loading it would fail
    assert result.exit_code != 0
    text = _text(result.output)
    assert "2 requested rung(s) cannot run" in text, text
    assert "LoRA SFT:" in text and "RAG + LoRA (RAFT):" in text and "train.fields: {reference: COLUMN}" in text
    assert not (out / "rungs").exists() and not (out / "plan.json").exists()  # nothing planned, nothing built
