"""A full disk or an OOM mid-run ends with a clear message and a failed (never complete) run that resumes;
the final artifacts are all-or-nothing; QLoRA refuses, before any work, where bitsandbytes cannot run."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from trl import SFTTrainer
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.run import read_run
from tailorlm.core.system import System
from tailorlm.train.safety import is_disk_full, is_out_of_memory

pytestmark = pytest.mark.integration


def _write_chats(path: Path, n: int = 16) -> Path:
    pairs = [("what is two plus two?", "four"), ("capital of France?", "Paris"), ("say hello", "hello, world!")]
    rows = []
    for i in range(n):
        q, a = pairs[i % len(pairs)]
        rows.append(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}))
    path.write_text("\n".join(rows) + "\n")
    return path


def _train(tmp_path: Path, model: Path, *extra: str) -> Any:
    data = _write_chats(tmp_path / "chat.jsonl")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: safety\nmodel: {model}\ndata: {{path: {data}}}\n")
    args = ["train", "sft", str(recipe), "eval_fraction=0", "canaries.enabled=false"]
    args += ["training.batch_size=4", "training.max_steps=4", "training.save_steps=2", *extra]
    return CliRunner().invoke(app, [*args, "--runs-root", str(tmp_path / "runs")])


def _resume(run_dir: Path, *overrides: str) -> Any:
    return CliRunner().invoke(app, ["train", "sft", "--resume", str(run_dir), *overrides])


def _only_run(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def test_disk_full_during_a_checkpoint_fails_clearly_and_resumes(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = SFTTrainer._save_checkpoint

    def save_until_the_disk_fills(self: Any, model: Any, trial: Any) -> None:
        if self.state.global_step < 4:
            return real_save(self, model, trial)
        # Half a checkpoint: the weights made it, trainer_state.json (written last) did not.
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * 64)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SFTTrainer, "_save_checkpoint", save_until_the_disk_fills)
    result = _train(tmp_path, tiny_model_dir)
    run_dir = _only_run(tmp_path)
    assert result.exit_code == 3, result.output
    out = " ".join(result.output.split())  # Rich wraps long lines
    assert "disk is full" in out and str(run_dir) in out
    assert "Last complete checkpoint: checkpoint-2" in out
    assert f"tailor train sft --resume {run_dir}" in out
    info = read_run(run_dir)
    assert info.status == "failed" and "disk is full" in (info.error or "")
    # The half-written checkpoint is gone (its space given back) and no System was written.
    assert not (run_dir / "checkpoints" / "checkpoint-4").exists()
    assert not (run_dir / "artifacts" / "system.yaml").exists()

    monkeypatch.setattr(SFTTrainer, "_save_checkpoint", real_save)
    resumed = _resume(run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert read_run(run_dir).status == "complete"
    assert System.load(run_dir / "artifacts").adapters
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 4


def test_out_of_memory_in_a_step_says_what_to_lower_and_resumes(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = SFTTrainer.training_step

    def step_that_runs_out_of_memory(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.state.global_step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", step_that_runs_out_of_memory)
    result = _train(tmp_path, tiny_model_dir, "training.max_length=256")
    run_dir = _only_run(tmp_path)
    assert result.exit_code == 3, result.output
    out = " ".join(result.output.split())
    assert "out of memory" in out and str(run_dir) in out and "checkpoint-2" in out
    # Half the micro-batch, twice the accumulation: the effective batch (4) and so the schedule stay the same.
    assert "training.batch_size=2 training.grad_accum=2" in out and "effective batch stays 4" in out
    assert "training.max_length=128" in out and "training.activation_checkpointing=true" in out
    assert read_run(run_dir).status == "failed"

    monkeypatch.setattr(SFTTrainer, "training_step", real_step)
    resumed = _resume(run_dir, "training.batch_size=2", "training.grad_accum=2")
    assert resumed.exit_code == 0, resumed.output
    assert read_run(run_dir).status == "complete"
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 4


def test_disk_full_during_the_final_save_leaves_no_system(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save_model = SFTTrainer.save_model

    def save_half_then_fail(self: Any, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if _internal_call:  # checkpoints save through here too; only the final save fails
            return real_save_model(self, output_dir, _internal_call)
        Path(output_dir or ".", "adapter_config.json").write_text("{}")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(SFTTrainer, "save_model", save_half_then_fail)
    result = _train(tmp_path, tiny_model_dir)
    run_dir = _only_run(tmp_path)
    assert result.exit_code == 3, result.output
    assert "saving the final artifacts" in " ".join(result.output.split())
    assert read_run(run_dir).status == "failed"
    # All or nothing: no adapter folder, no system.yaml, no temporary folder left behind.
    assert sorted(p.name for p in (run_dir / "artifacts").iterdir()) == []

    monkeypatch.setattr(SFTTrainer, "save_model", real_save_model)
    resumed = _resume(run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert System.load(run_dir / "artifacts").adapters


def test_errors_are_recognised_however_they_are_raised() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("safetensors: write failed") from inner
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 8 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_qlora_without_a_gpu_fails_before_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tailorlm.train.quantized import qlora_unavailable_reason

    if qlora_unavailable_reason() is None:
        pytest.skip("this machine can run QLoRA (see the gpu test)")
    result = _train(tmp_path, tiny_model_dir, "strategy.method=qlora")
    assert result.exit_code != 0
    out = " ".join(result.output.split())
    assert "QLoRA needs a CUDA GPU with bitsandbytes" in out and "strategy.method=lora" in out
    run_dir = _only_run(tmp_path)
    # Refused before any work: no data was read, no step taken, no checkpoint written.
    assert read_run(run_dir).meta["datasets"] == [] and not (run_dir / "checkpoints").exists()


@pytest.mark.gpu
def test_qlora_trains_a_lora_adapter_on_a_4bit_base(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tailorlm.train.quantized import qlora_unavailable_reason

    if reason := qlora_unavailable_reason():
        pytest.skip(reason)
    result = _train(tmp_path, tiny_model_dir, "strategy.method=qlora")
    assert result.exit_code == 0, result.output
    system = System.load(_only_run(tmp_path) / "artifacts")
    config = json.loads((Path(system.adapters[0].path) / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"


def test_a_checkpoint_with_a_torn_trainer_state_is_skipped(tmp_path: Path) -> None:
    from tailorlm.train.sft import latest_checkpoint

    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_st'), (6, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    # checkpoint-4's state was cut off by the full disk, checkpoint-6 never got one.
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
