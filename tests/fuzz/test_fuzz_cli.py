"""Fuzz the CLI end to end: ``tailor data validate`` and ``tailor eval run`` on mutated files.

The property: a bad file exits non-zero with ``error: ...`` and one line per problem, never a Python traceback,
and nothing from the file reaches the terminal as a raw escape sequence or as Rich markup.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fuzz.fuzz_helpers import FIXTURES, HOSTILE, budget, counted, mutated_bytes
from tailorlm.cli.main import app

pytestmark = pytest.mark.integration

runner = CliRunner()
REAL_FILES = sorted(p for p in FIXTURES.iterdir() if p.is_file())
RAW = ("\x1b", "\x00", "\u202e", "\x07")
# Names that are Rich markup or terminal escapes: they reach the error message through the path.
NAMES = ["data", "[bold]x[/]", "a[/b]", "\x1b[31mred", "\u202etxt", "[link=https://x]y"]


def _assert_clean_failure(result: object, *, allow_success: bool = True) -> None:
    code, out = result.exit_code, result.output  # type: ignore[attr-defined]
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)  # type: ignore[attr-defined]
    assert "Traceback" not in out, out
    for char in RAW:
        assert char not in out, f"raw {char!r} in the CLI output"
    if code == 0:
        assert allow_success, out
        return
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), out
    for line in lines[1:]:
        # Issue lines (file:line: field: message), the "… and N more" line, hints and ConfigError's extra lines.
        assert line.startswith(("  ", "hint:", "…")) or ": " in line, out


@settings(max_examples=budget(40))
@given(st.data())
@counted("cli: tailor data validate on mutated files")
def test_data_validate(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(REAL_FILES))
    name = data.draw(st.sampled_from(NAMES)) + "".join(original.suffixes)
    folder = Path(tempfile.mkdtemp(prefix="fuzz-cli-"))
    path = folder / name.replace("/", "_") if "/" in name and not name.startswith("a[") else folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.draw(mutated_bytes(original.read_bytes())))
    result = runner.invoke(app, ["data", "validate", str(path), "--tokenizer", "none"])
    _assert_clean_failure(result)


TASK = b"name: fuzz\neval: {path: missing.jsonl}\nmetrics: [f1]\ngeneration: {max_new_tokens: 4}\n"


@settings(max_examples=budget(25))
@given(mutated=mutated_bytes(TASK), override=st.sampled_from(["", "eval.limit=0", "name=[", *HOSTILE[:6]]))
@counted("cli: tailor eval run on mutated task.yaml")
def test_eval_run_task(mutated: bytes, override: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-cli-"))
    (folder / "task.yaml").write_bytes(mutated)
    # A model that does not exist: a task that loads still fails fast (no data file, no model), never generates.
    (folder / "system.yaml").write_text("name: s\nmodel: /nonexistent/model\n", encoding="utf-8")
    args = ["eval", "run", str(folder / "system.yaml"), "--task", str(folder / "task.yaml"), "--root", str(folder)]
    result = runner.invoke(app, args + ([override] if override else []))
    _assert_clean_failure(result, allow_success=False)


@pytest.mark.parametrize("name", ["a[/b]", "[bold]x[/]", "\x1b[2Jx"])
def test_markup_and_escapes_in_a_file_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"text": "a", "bad\\u001b[31m": 1}\n')
    result = runner.invoke(app, ["data", "validate", str(path), "--tokenizer", "none"])
    _assert_clean_failure(result, allow_success=False)
    assert name.replace("\x1b", "\\x1b") in result.output.replace("\n", "")
