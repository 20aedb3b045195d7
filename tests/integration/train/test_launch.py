"""`--launcher accelerate`: one run id for N processes, both ranks train (DDP, gloo on the CPU), rank 0 alone
writes; the shipped FSDP/DeepSpeed configs are valid accelerate configs; the multi-GPU runs are `gpu` tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.run import read_run
from tailorlm.core.system import System
from tailorlm.train.launch import accelerate_command

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ACCELERATE_CONFIGS = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))


def _recipe(tmp_path: Path, model: Path, n: int = 16) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(n)
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "ddp",
                "model": str(model),
                "data": {"path": str(data)},
                "eval_fraction": 0,
                "training": {"max_steps": 3, "batch_size": 2, "save_steps": 2},
                "canaries": {"enabled": False},
            }
        )
    )
    return recipe


def _launch(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["train", "sft", *args, "--runs-root", str(tmp_path / "runs")])


def test_two_processes_train_one_run_with_ddp_on_the_cpu(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir)
    result = _launch(tmp_path, str(recipe), "--launcher", "accelerate", "--num-processes", "2", "--cpu")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()  # one run id, created by the launcher and shared by both ranks
    info = read_run(run_dir)
    assert info.status == "complete"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    # Only rank 0 logs: each step appears once, not once per process.
    steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3]
    assert [d["name"] for d in info.meta["datasets"]] == ["train"]
    system = System.load(run_dir / "artifacts")
    assert system.adapters and system.created_by == run_dir.name
    assert (run_dir / "artifacts" / "README.md").is_file()
    assert not list((run_dir / "artifacts").glob(".*partial"))

    # Resume under the launcher: the 2 processes continue from the run's checkpoint to the new max_steps.
    launcher = ["--launcher", "accelerate", "--num-processes", "2", "--cpu"]
    resumed = CliRunner().invoke(app, ["train", "sft", "--resume", str(run_dir), "training.max_steps=4", *launcher])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 4
    assert read_run(run_dir).status == "complete"


def test_a_failing_worker_fails_the_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir)
    # A dataset path that does not exist: every worker stops with a DataError before training.
    result = _launch(
        tmp_path, str(recipe), "data.path=/nonexistent.jsonl", "--launcher", "accelerate", "--num-processes", "1"
    )
    assert result.exit_code != 0
    assert "accelerate launch exited with code" in " ".join(result.output.split())
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert read_run(run_dir).status == "failed"


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_shipped_accelerate_configs_load_as_accelerate_configs(path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    raw = yaml.safe_load(path.read_text())
    assert {"compute_environment", "distributed_type", "num_processes", "mixed_precision"} <= set(raw)
    config = ClusterConfig.from_yaml_file(str(path))
    if path.stem == "fsdp":
        assert config.distributed_type == DistributedType.FSDP
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # the final save is one HF folder
    elif path.stem.startswith("deepspeed-zero"):
        assert config.distributed_type == DistributedType.DEEPSPEED
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])
        if config.deepspeed_config["zero_stage"] == 3:
            assert config.deepspeed_config["zero3_save_16bit_model"] is True
    else:
        assert config.distributed_type == DistributedType.MULTI_GPU
    cmd, _ = accelerate_command(["train", "sft", "r.yaml"], num_processes=2, accelerate_config=path, cpu=False)
    assert cmd[cmd.index("--config_file") + 1] == str(path) and cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-4:] == ["tailorlm.cli.main", "train", "sft", "r.yaml"]


def test_every_flavour_is_shipped() -> None:
    assert {p.stem for p in ACCELERATE_CONFIGS} >= {"ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"}


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_multi_gpu_runs(tmp_path: Path, tiny_model_dir: Path, config: str, method: str) -> None:
    if _gpus() < 2:
        pytest.skip("needs at least 2 CUDA GPUs")
    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    recipe = _recipe(tmp_path, tiny_model_dir)
    path = REPO / "recipes" / "accelerate" / f"{config}.yaml"
    result = _launch(
        tmp_path,
        str(recipe),
        f"strategy.method={method}",
        "--launcher",
        "accelerate",
        "--accelerate-config",
        str(path),
        "--num-processes",
        "2",
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["world_size"] == 2
    System.load(run_dir / "artifacts")
