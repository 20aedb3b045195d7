"""`tailor data validate` and `tailor data formats` through the real command table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
runner = CliRunner()


def test_validate_good_file_prints_json_with_token_stats(tiny_model_dir: Path) -> None:
    result = runner.invoke(
        app, ["data", "validate", str(FIXTURES / "chat.jsonl"), "--tokenizer", str(tiny_model_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "openai" and report["kind"] == "chat" and report["records"] == 2
    assert len(report["fingerprint"]) == 64 and report["path"].endswith("chat.jsonl")
    tokens = report["tokens"]
    assert tokens["count"] == 2 and 0 < tokens["min"] <= tokens["p50"] <= tokens["p95"] <= tokens["max"]


def test_validate_prints_a_table() -> None:
    result = runner.invoke(app, ["data", "validate", str(FIXTURES / "classification.csv"), "--tokenizer", "none"])
    assert result.exit_code == 0, result.output
    assert "classification" in result.stdout and "fingerprint" in result.stdout and "labels" in result.stdout


def test_validate_bad_file_lists_every_issue_and_exits_1() -> None:
    path = FIXTURES / "bad_chat.jsonl"
    result = runner.invoke(app, ["data", "validate", str(path), "--tokenizer", "none"])
    assert result.exit_code == 1
    assert "4 problem(s)" in result.output
    for line, field in [(2, "weight"), (3, "(record)"), (4, "messages[1].role"), (5, "messages")]:
        assert f"{path}:{line}: {field}: " in result.output
    assert "Traceback" not in result.output


def test_validate_options_format_field_extra(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "answer": "4", "id": 7}) + "\n")
    args = ["data", "validate", str(path), "-t", "none", "--json", "--field", "input=question"]
    result = runner.invoke(app, [*args, "--field", "reference=answer", "--extra", "metadata", "--kind", "eval"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "eval"
    result = runner.invoke(app, [*args, "--format", "text"])
    assert result.exit_code == 1 and f"{path}:1: question: unknown field for the text format" in result.output


def test_validate_max_record_bytes() -> None:
    result = runner.invoke(
        app, ["data", "validate", str(FIXTURES / "chat.jsonl"), "-t", "none", "--max-record-bytes", "50"]
    )
    assert result.exit_code == 1 and "over the limit of 50" in result.output


def test_tokenizer_failure_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "validate", str(FIXTURES / "chat.jsonl"), "-t", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "could not load tokenizer" in result.output and "--tokenizer none" in result.output


def test_formats_lists_every_format() -> None:
    result = runner.invoke(app, ["data", "formats", "--json"])
    assert result.exit_code == 0
    names = [f["format"] for f in json.loads(result.stdout)]
    assert names == ["openai", "alpaca", "sharegpt", "preference", "hh", "binary", "text", "classification", "eval"]
