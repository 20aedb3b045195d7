"""PPO on a tiny random model: it trains through the CLI against the task's metric and writes a System, the curves
and the sampled answers; a rollout is reused for ppo.epochs updates; only the LoRA adapter and the value head
change; full training keeps a frozen copy as its reference; a killed run resumes from its checkpoint, value head
included."""

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
from tailorlm.train.align.ppo import VALUE_HEAD_FILE
from tailorlm.train.align.rl import CURVES_PNG, SAMPLES_MD, build_rl_trainer, fit_rl
from tailorlm.train.align.rl_config import RlRecipe

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "rl-ppo.yaml"
QA = [("capital of France?", "Paris"), ("capital of Italy?", "Rome"), ("two plus two?", "four"),
      ("say hello", "hello")]  # fmt: skip
# Two rollouts of 2 prompts × 2 answers, each used for two clipped updates.
BASE = ["group_size=2", "max_completion_length=8", "training.max_steps=4", "training.batch_size=2",
        "ppo.epochs=2", "training.max_length=128", "canaries.enabled=false", "limit=null"]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
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


def _metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_cli_trains_ppo_and_reuses_each_rollout(tmp_path: Path, tiny_model_dir: Path, tiny_task: Path) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    args = ["train", "rl", str(RECIPE), f"model={tiny_model_dir}", f"task={tiny_task}", *BASE]
    result = CliRunner().invoke(app, [*args, "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "ppo · lora" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    system = System.load(run_dir / "artifacts")
    (adapter,) = system.adapters
    assert (Path(adapter.path) / "adapter_config.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["algorithm"] == "ppo" and metrics["tokens"] > 0
    rows = _metric_rows(run_dir)
    # A rollout at steps 1 and 3 (its reward, KL and lengths); a clipped update at every step.
    assert [r["step"] for r in rows if "reward" in r] == [1, 3]
    assert [r["step"] for r in rows if "policy_loss" in r] == [1, 2, 3, 4]
    first = next(r for r in rows if "reward" in r)
    assert 0.0 <= first["reward"] <= 1.0 and abs(first["kl"]) < 1e-5  # the adapter starts as a no-op
    assert first["approx_kl"] == pytest.approx(0.0, abs=1e-6)  # the first update's ratio is exactly 1
    assert (run_dir / CURVES_PNG).read_bytes()[:4] == b"\x89PNG"
    assert "Step 1 (start)" in (run_dir / SAMPLES_MD).read_text()


def test_only_the_adapter_and_value_head_change(tmp_path: Path, tiny_model_dir: Path, tiny_task: Path) -> None:
    (tmp_path / "my_reward.py").write_text(
        "def short(prompts, completions, references):\n    return [-float(len(c)) for c in completions]\n"
    )
    overrides = [f"model={tiny_model_dir}", f"task={tiny_task}", *BASE, "reward.kind=python",
                 f"reward.function={tmp_path / 'my_reward.py'}:short", "training.learning_rate=1e-2",
                 "kl_target=0.001", "kl_horizon=4"]  # fmt: skip
    recipe = load_config(RlRecipe, RECIPE, overrides)
    with Run.create("rl", root=tmp_path / "runs", config=recipe, kind="rl") as run:
        trainer, *_ = build_rl_trainer(recipe, run)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        head = trainer.value_head.weight.detach().clone()
        trainer.train()
        # Rollouts merge the adapter into the base weights and take it out again (rollouts.py): the round trip
        # may move a base weight by an ulp, which is rounding, not training.
        changed = {n for n, p in trainer.model.named_parameters() if not torch.allclose(p, before[n], atol=1e-6)}
    assert changed and all("lora_" in n for n in changed), changed
    assert not torch.equal(trainer.value_head.weight, head)
    betas = [r["beta"] for r in _metric_rows(run.path) if "beta" in r]
    assert betas and betas[-1] != 0.05 and trainer.beta == betas[-1]  # the adaptive controller moved it


def test_full_training_keeps_a_frozen_reference(tmp_path: Path, tiny_model_dir: Path, tiny_task: Path) -> None:
    overrides = [f"model={tiny_model_dir}", f"task={tiny_task}", *BASE, "strategy.method=full",
                 "training.learning_rate=1e-3", "training.max_steps=2"]  # fmt: skip
    recipe = load_config(RlRecipe, RECIPE, overrides)
    with Run.create("rl", root=tmp_path / "runs", config=recipe, kind="rl") as run:
        trainer, *_ = build_rl_trainer(recipe, run)
        reference = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
        trainer.train()
    assert all(torch.equal(p, reference[n]) for n, p in trainer.ref_model.named_parameters())
    assert any(not torch.equal(p, reference[n]) for n, p in trainer.model.named_parameters())


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_a_killed_run_resumes_with_its_value_head(tmp_path: Path, tiny_model_dir: Path, tiny_task: Path) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    overrides = [f"model={tiny_model_dir}", f"task={tiny_task}", *BASE, "training.save_steps=2",
                 "training.learning_rate=1e-3"]  # fmt: skip
    recipe = load_config(RlRecipe, RECIPE, overrides)
    with Run.create("whole", root=tmp_path / "runs", config=recipe, kind="rl") as whole:
        fit_rl(recipe, whole)
    with Run.create("killed", root=tmp_path / "runs", config=recipe, kind="rl") as killed:
        fit_rl(recipe, killed, callbacks=[StopAt(2)])
    shutil.rmtree(killed.artifacts)
    assert (killed.path / "checkpoints" / "checkpoint-2" / VALUE_HEAD_FILE).is_file()

    result = CliRunner().invoke(app, ["train", "rl", "--resume", str(killed.path)])
    assert result.exit_code == 0, result.output

    def series(run_dir: Path, key: str) -> dict[int, float]:
        return {r["step"]: r[key] for r in _metric_rows(run_dir) if key in r}

    # The second rollout (step 3) samples with the restored RNG from the restored adapter and value head.
    for key in ("reward", "kl", "value_mean", "policy_loss"):
        assert series(killed.path, key) == pytest.approx(series(whole.path, key), rel=1e-4, abs=1e-6), key


def test_too_few_prompts_for_one_rollout_is_a_clear_error(
    tmp_path: Path, tiny_model_dir: Path, tiny_task: Path
) -> None:
    from tailorlm.errors import ConfigError

    recipe = load_config(RlRecipe, RECIPE, [f"model={tiny_model_dir}", f"task={tiny_task}", *BASE,
                                            "training.batch_size=8"])  # fmt: skip
    with Run.create("rl", root=tmp_path / "runs", config=recipe, kind="rl") as run, pytest.raises(ConfigError) as err:
        build_rl_trainer(recipe, run)
    assert "batch_size=8" in str(err.value) and "only 4" in str(err.value)
