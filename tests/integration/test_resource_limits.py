"""Running out on any command: a full disk, no memory, or a cache folder that cannot be written each end with one
clear line and a non-zero exit, never a traceback; the run is not marked complete and nothing finished is lost.

Training's own guard (checkpoints, OOM in a step, final save) is tested in ``train/test_safety.py``; the atomic
writers and the shared cache in ``unit/core/test_io.py``.
"""

from __future__ import annotations

import errno
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.limits import resource_error
from tailorlm.core.run import list_runs

runner = CliRunner()


def _write_task(folder: Path, n: int = 6) -> Path:
    rows = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(n)]
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "task.yaml").write_text(
        textwrap.dedent(
            """\
            name: tiny-sums
            eval: {path: eval.jsonl, fields: {input: question, reference: answer}}
            metrics: [exact_match]
            generation: {max_new_tokens: 3}
            bootstrap: {resamples: 100}
            """
        )
    )
    return folder / "task.yaml"


def _one_line(output: str) -> str:
    return " ".join(output.split())


# --- the root handler, for every command --------------------------------------------------------------------------

CASES = [
    (OSError(errno.ENOSPC, "No space left on device", "/data/runs/x/metrics.json"), "disk full while writing"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/data/runs/x/metrics.json"), "disk quota exceeded while writing"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/runs"), "cannot write /mnt/ro/runs: Read-only file"),
    (PermissionError(errno.EACCES, "Permission denied", "/srv/shared/runs"), "cannot write /srv/shared/runs"),
    (MemoryError(), "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), "out of memory"),
    (RuntimeError("lance error: IO: No space left on device (os error 28)"), "disk full"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("err", "expected"), CASES, ids=[f"{type(e).__name__}-{i}" for i, (e, _) in enumerate(CASES)])
def test_any_command_turns_running_out_into_one_clear_line(
    err: BaseException, expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def raising(*args: Any, **kwargs: Any) -> Any:
        try:
            raise err
        except BaseException as inner:  # wrapped, as libraries do: the cause is what counts
            raise RuntimeError("while listing runs") from inner

    monkeypatch.setattr("tailorlm.cli.runs.list_runs", raising)
    result = runner.invoke(app, ["runs", "list", "--root", str(tmp_path)])
    assert result.exit_code == 3, result.output
    text = _one_line(result.output)
    assert text.startswith("error:") and expected in text and "Traceback" not in text
    assert "hint:" in text
    if "memory" in expected:
        assert "batch" in text and "activation_checkpointing" in text


@pytest.mark.unit
def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tailorlm.cli.runs.list_runs", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    result = runner.invoke(app, ["runs", "list", "--root", str(tmp_path)])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "bug"
    assert resource_error(KeyError("x")) is None
    assert resource_error(PermissionError(errno.EACCES, "Permission denied")) is None  # no path: nothing to act on


# --- on a real command: tailor eval ------------------------------------------------------------------------------


@pytest.mark.integration
def test_disk_full_in_eval_fails_the_run_and_keeps_the_predictions(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))
    task = _write_task(tmp_path)
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "metrics.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    args = ["eval", str(tiny_model_dir), "--task", str(task), "--root", str(tmp_path / "runs"), "--batch-size", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output
    text = _one_line(result.output)
    assert "disk full while writing" in text and "metrics.json" in text and "MB free on" in text
    (failed,) = list_runs(tmp_path / "runs")
    assert failed.status == "failed" and not (failed.path / "metrics.json").exists()

    monkeypatch.setattr(os, "replace", real_replace)  # space freed: the rerun generates nothing again
    again = runner.invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["cost"]["generated"] == 0


@pytest.mark.integration
def test_out_of_memory_in_eval_suggests_a_smaller_batch(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tailorlm.models.engines.ct2 import CT2Engine
    from tailorlm.models.engines.hf import HFEngine

    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: 9 GB")

    def generate_ct2(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise MemoryError("std::bad_alloc")  # what CTranslate2's allocator raises

    monkeypatch.setattr(HFEngine, "generate", generate)
    monkeypatch.setattr(CT2Engine, "generate", generate_ct2)
    task = _write_task(tmp_path)
    result = runner.invoke(app, ["eval", str(tiny_model_dir), "--task", str(task), "--root", str(tmp_path / "runs")])
    assert result.exit_code == 3, result.output
    text = _one_line(result.output)
    assert "out of memory" in text and "--batch-size" in text and "Traceback" not in text
    (failed,) = list_runs(tmp_path / "runs")
    assert failed.status == "failed" and not (failed.path / "metrics.json").exists()


@pytest.mark.integration
def test_a_cache_that_cannot_be_a_folder_names_tailor_cache(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores chmod, so the unwritable cache is one no user can create: a folder path below a regular file.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TAILOR_CACHE", str(blocker / "cache"))
    task = _write_task(tmp_path)
    result = runner.invoke(app, ["eval", str(tiny_model_dir), "--task", str(task), "--root", str(tmp_path / "runs")])
    assert result.exit_code == 3, result.output
    text = _one_line(result.output)
    assert f"cannot write the tailorlm cache at {blocker / 'cache'} (TAILOR_CACHE)" in text
    assert "set TAILOR_CACHE to a folder you can write" in text
    assert all(r.status != "complete" for r in list_runs(tmp_path / "runs"))


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 555; the not-a-folder test covers root")
def test_a_read_only_cache_names_tailor_cache(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    monkeypatch.setenv("TAILOR_CACHE", str(cache))
    task = _write_task(tmp_path)
    try:
        result = runner.invoke(
            app, ["eval", str(tiny_model_dir), "--task", str(task), "--root", str(tmp_path / "runs")]
        )
    finally:
        cache.chmod(0o755)
    assert result.exit_code == 3, result.output
    assert f"cannot write the tailorlm cache at {cache} (TAILOR_CACHE)" in _one_line(result.output)
