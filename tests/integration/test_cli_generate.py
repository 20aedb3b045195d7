"""`tailor generate`, `tailor chat` and `tailor demo` as a user runs them (tiny model; no downloads)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.run import load_run
from tailorlm.core.system import PromptSpec, System
from tailorlm.demo import DemoConfig, run_demo

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_generate_json_for_several_prompts(tiny_model_dir: Path) -> None:
    res = runner.invoke(app, ["generate", "--model", str(tiny_model_dir), "--max-tokens", "4", "--json", "a", "b"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["prompt"] for r in rows] == ["a", "b"]
    assert all(r["usage"]["completion_tokens"] <= 4 for r in rows)


def test_generate_reads_prompts_from_stdin(tiny_model_dir: Path) -> None:
    res = runner.invoke(app, ["generate", "-m", str(tiny_model_dir), "--max-tokens", "2", "--json"], input="x\n\ny\n")
    assert res.exit_code == 0, res.output
    assert [r["prompt"] for r in json.loads(res.stdout)] == ["x", "y"]


def test_generate_with_a_system_applies_its_prompt_program(tiny_model_dir: Path, tmp_path: Path) -> None:
    system = System(model=str(tiny_model_dir), prompt=PromptSpec(system="Be brief.", template="Q: {{ input }}"))
    path = system.save(tmp_path)
    res = runner.invoke(app, ["generate", "--system", str(path), "--max-tokens", "3", "--json", "hi"])
    assert res.exit_code == 0, res.output
    # prompt tokens include the system message and template, so they exceed the bare question's
    bare = runner.invoke(app, ["generate", "-m", str(tiny_model_dir), "--max-tokens", "3", "--json", "hi"])
    assert json.loads(res.stdout)[0]["usage"]["prompt_tokens"] > json.loads(bare.stdout)[0]["usage"]["prompt_tokens"]


def test_missing_model_is_a_clean_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", "--model", str(tmp_path / "missing"), "hi"])
    assert res.exit_code == 1
    assert "does not exist" in res.output
    assert "Traceback" not in res.output


def test_model_and_system_together_is_an_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", "-m", str(tiny_model_dir), "-s", str(tmp_path), "hi"])
    assert res.exit_code == 1 and "not both" in res.output


def test_chat_streams_and_keeps_history(tiny_model_dir: Path) -> None:
    res = runner.invoke(
        app, ["chat", "-m", str(tiny_model_dir), "--max-tokens", "3"], input="hi\n/reset\nagain\n/exit\n"
    )
    assert res.exit_code == 0, res.output
    assert res.output.count("assistant>") == 2
    assert "history cleared" in res.output


def test_demo_records_a_complete_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_demo(DemoConfig(model=str(tiny_model_dir), max_new_tokens=4), root=tmp_path)
    info = load_run(result.run.path)
    assert info.status == "complete"
    run_dir = Path(result.run.path)
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == 3
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"accuracy", "tokens_per_s", "load_s"} <= set(metrics)
    assert System.load(run_dir / "artifacts").created_by == result.run.id


def test_version_and_help() -> None:
    assert runner.invoke(app, ["--version"]).stdout.startswith("tailorlm ")
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for command in ("generate", "chat", "demo", "data", "runs"):
        assert command in res.stdout


def test_generate_engine_flag_picks_the_engine_and_refuses_unknown_ones(tiny_model_dir: Path) -> None:
    args = ["generate", "-m", str(tiny_model_dir), "--max-tokens", "4", "--json", "a", "b"]
    fast, hf = runner.invoke(app, [*args, "--engine", "ct2"]), runner.invoke(app, [*args, "--engine", "hf"])
    assert fast.exit_code == 0 and hf.exit_code == 0, fast.output + hf.output
    assert [r["text"] for r in json.loads(fast.stdout)] == [r["text"] for r in json.loads(hf.stdout)]
    bad = runner.invoke(app, [*args, "--engine", "fast"])
    assert bad.exit_code != 0 and "--engine 'fast' is not an engine" in bad.output and "Traceback" not in bad.output
