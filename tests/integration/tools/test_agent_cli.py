"""An agent System from system.yaml through `tailor generate` and `tailor chat`: the loop runs on a real engine and
the JSON carries its trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.system import AgentSpec, System

pytestmark = pytest.mark.integration


def test_agent_system_answers_with_a_trace(tiny_model_dir: Path, tmp_path: Path) -> None:
    system = System(name="agent", model=str(tiny_model_dir), agent=AgentSpec(max_steps=2),
                    generation={"max_new_tokens": 8})  # fmt: skip
    path = system.save(tmp_path)
    assert System.load(path).agent == system.agent
    result = CliRunner().invoke(app, ["generate", "--system", str(path), "--json", "What is 6 * 7?"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["finish_reason"] in ("answer", "max_steps") and row["steps"] >= 1
    assert row["trace"]["steps"][0]["kind"] == "model"
    chat = CliRunner().invoke(app, ["chat", "--system", str(path)], input="hello\n/exit\n")
    assert chat.exit_code == 0, chat.output


def test_search_tool_needs_an_index(tiny_model_dir: Path, tmp_path: Path) -> None:
    system = System(name="agent", model=str(tiny_model_dir), agent=AgentSpec(builtins=["calculator", "search"]))
    result = CliRunner().invoke(app, ["generate", "--system", str(system.save(tmp_path)), "hi"])
    assert result.exit_code != 0 and "needs an index" in result.output
