"""Online RL on a tiny random model: GRPO and RLOO train through the CLI for two steps against the task's metric
and write a System, the curves and the sampled answers; metrics.jsonl holds each step's reward and KL; a Python
reward and the adaptive KL controller run through the library; only the LoRA adapter changes; a killed run resumes
where it stopped."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.train.align.rl import CURVES_PNG, SAMPLES_JSONL, SAMPLES_MD, fit_rl
from tailorlm.train.align.rl_config import RlRecipe

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "rl-grpo.yaml"

QA = [("capital of France?", "Paris"), ("capital of Italy?", "Rome"), ("two plus two?", "four"),
      ("say hello", "hello")]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """A 32-wide model gains nothing from a second thread; on a shared 2-core machine two threads wait on each
    other at every op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_task(tmp_path: Path) -> Path:
    rows = [{"input": q, "reference": a} for q, a in QA]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    (tmp_path / "task.yaml").write_text(
        "name: tiny-qa\neval: {path: eval.jsonl}\ntrain: {path: train.jsonl}\nmetrics: [f1, exact_match]\n"
        "generation: {max_new_tokens: 8}\n"
    )
    return tmp_path / "task.yaml"


BASE = ["group_size=2", "max_completion_length=8", "training.max_steps=2", "training.batch_size=2",
        "training.max_length=128", "canaries.enabled=false", "limit=null"]  # fmt: skip


def _metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_cli_trains_each_algorithm(tmp_path: Path, tiny_model_dir: Path, tiny_task: Path, algorithm: str) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    args = ["train", "rl", str(RECIPE), f"model={tiny_model_dir}", f"task={tiny_task}", f"algorithm={algorithm}"]
    result = CliRunner().invoke(app, [*args, *BASE, "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert f"{algorithm} · lora · G 2" in result.output and "mean reward" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    system = System.load(run_dir / "artifacts")
    (adapter,) = system.adapters
    assert (Path(adapter.path) / "adapter_config.json").is_file()
    assert system.model == str(tiny_model_dir) and system.created_by == run_dir.name

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["algorithm"] == algorithm and metrics["tokens"] > 0
    assert metrics["reward_first"] is not None and metrics["kl_last"] is not None
    steps = [r for r in _metric_rows(run_dir) if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2] and all("kl" in r and "reward_std" in r for r in steps)
    assert all(0.0 <= r["reward"] <= 1.0 for r in steps)  # F1 against the references
    assert (run_dir / CURVES_PNG).read_bytes()[:4] == b"\x89PNG"
    samples = (run_dir / SAMPLES_MD).read_text()
    assert "Step 1 (start)" in samples and "Step 2 (end)" in samples and "| prompt | reference |" in samples
    rollouts = [json.loads(line) for line in (run_dir / SAMPLES_JSONL).read_text().splitlines()]
    assert {r["step"] for r in rollouts} == {1, 2} and all(r["reference"] for r in rollouts)


def test_python_reward_adaptive_kl_and_only_the_adapter_changes(
    tmp_path: Path, tiny_model_dir: Path, tiny_task: Path
) -> None:
    (tmp_path / "my_reward.py").write_text(
        "def short(prompts, completions, references):\n    return [-float(len(c)) for c in completions]\n"
    )
    overrides = [f"model={tiny_model_dir}", f"task={tiny_task}", *BASE, "reward.kind=python",
                 f"reward.function={tmp_path / 'my_reward.py'}:short", "kl_target=0.001", "kl_horizon=4",
                 "training.learning_rate=1e-2"]  # fmt: skip
    recipe = load_config(RlRecipe, RECIPE, overrides)
    from tailorlm.train.align.rl import build_rl_trainer

    with Run.create("rl", root=tmp_path / "runs", config=recipe, kind="rl") as run:
        trainer, *_ = build_rl_trainer(recipe, run)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        # Rollouts merge the adapter into the base weights and take it out again (rollouts.py): the round trip
        # may move a base weight by an ulp, which is rounding, not training.
        changed = {n for n, p in trainer.model.named_parameters() if not torch.allclose(p, before[n], atol=1e-6)}
    assert changed and all("lora_" in n for n in changed), changed
    rows = _metric_rows(run.path)
    assert all(r["reward"] <= 0 for r in rows if "reward" in r)
    betas = [r["beta"] for r in rows if "beta" in r]
    # KL above its (tiny) target raises beta by up to 20% × samples/horizon per step; 0 KL lowers it.
    assert len(betas) == 2 and all(b != 0.04 for b in betas) and trainer.beta == betas[-1]


def test_fit_rl_from_a_prompts_file_with_rloo(tmp_path: Path, tiny_model_dir: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"input": q, "reference": a}) + "\n" for q, a in QA))
    overrides = [f"model={tiny_model_dir}", "task=null", f"prompts={prompts}", "reward.metric=exact_match",
                 "algorithm=rloo", *BASE]  # fmt: skip
    recipe = load_config(RlRecipe, RECIPE, overrides)
    with Run.create("rl", root=tmp_path / "runs", config=recipe, kind="rl") as run:
        system = fit_rl(recipe, run)
    assert system.adapters and json.loads((run.path / "metrics.json").read_text())["steps"] == 2


class StopAt(TrainerCallback):
    """Simulates a killed run: training stops after ``step`` (its checkpoint is written first)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path: Path, tiny_model_dir: Path, tiny_task: Path) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    overrides = [f"model={tiny_model_dir}", f"task={tiny_task}", *BASE, "training.max_steps=4",
                 "training.save_steps=2", "kl_target=0.001", "kl_horizon=4"]  # fmt: skip
    recipe = load_config(RlRecipe, RECIPE, overrides)
    with Run.create("whole", root=tmp_path / "runs", config=recipe, kind="rl") as whole:
        fit_rl(recipe, whole)
    with Run.create("killed", root=tmp_path / "runs", config=recipe, kind="rl") as killed:
        fit_rl(recipe, killed, callbacks=[StopAt(2)])
    shutil.rmtree(killed.artifacts)  # killed after checkpoint-2: nothing was saved beyond it

    result = CliRunner().invoke(app, ["train", "rl", "--resume", str(killed.path)])
    assert result.exit_code == 0, result.output

    def series(run_dir: Path, key: str) -> dict[int, float]:
        return {r["step"]: r[key] for r in _metric_rows(run_dir) if key in r}

    assert sorted(series(killed.path, "reward")) == [1, 2, 3, 4]
    # The sampling RNG, the adapter, the optimizer and the adaptive beta all continue from checkpoint-2.
    for key in ("reward", "kl", "beta"):
        assert series(killed.path, key) == pytest.approx(series(whole.path, key), rel=1e-4, abs=1e-7), key
    assert "Step 4 (end)" in (killed.path / SAMPLES_MD).read_text()
