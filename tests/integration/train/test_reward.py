"""Reward models on a tiny random model: the CLI reports held-out pairwise accuracy with a CI and writes a System
with a regression head, the scorer reproduces the run's scores from disk and tokenizes as the trainer did, only
the adapter and the score layer train, the Bradley–Terry loss falls, top-block LoRA and full training save what
they should, a killed run resumes exactly, and an invalid pair is reported with its file and line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.train.align.config import RewardRecipe
from tailorlm.train.align.reward import build_reward_trainer, fit_reward, pairwise_report, score_rows

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "reward-lora.yaml"

QUESTIONS = ["what is two plus two?", "capital of France?", "capital of Italy?", "say hello"]
GOOD = ["four", "Paris", "Rome", "hello, world!"]
BAD = ["the lazy dog jumps over it", "a quick brown fox", "0123456789 0123456789", "dog"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """A 32-wide model gains nothing from a second thread, and on a shared 2-core machine the two threads wait on
    each other at every op (8 steps: 0.3 s on one thread, 16 s on two beside another job)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_pairs(path: Path, n: int = 16, identical_at: int | None = None) -> Path:
    """``n`` pairs with distinct prompts; the record on line ``identical_at`` has the same answer on both sides."""
    lines = []
    for i in range(n):
        row = {"prompt": f"{QUESTIONS[i % 4]} (#{i})", "chosen": GOOD[i % 4], "rejected": BAD[(i + i // 4) % 4]}
        if i + 1 == identical_at:
            row["rejected"] = f" {row['chosen']}  "  # identical ignoring whitespace
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def _recipe(tmp_path: Path, model: Path, *overrides: str, n: int = 16) -> RewardRecipe:
    data = _write_pairs(tmp_path / "pairs.jsonl", n)
    base = [f"model={model}", f"data.path={data}", "training.batch_size=4", "training.max_steps=3"]
    return load_config(RewardRecipe, RECIPE, [*base, "training.max_length=128", *overrides])


def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    return CliRunner().invoke(app, ["train", "reward", *args])


def _losses(run_dir: Path) -> dict[int, float]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


class Snapshot(TrainerCallback):
    """The model's parameters as training starts and as it ends."""

    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]

    @staticmethod
    def _copy(model: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.before = self._copy(model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.after = self._copy(model)

    def changed(self) -> set[str]:
        return {n for n, p in self.before.items() if not torch.equal(p, self.after[n])}


def _rescored_held_out(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics.json's held_out block, the same report from the saved System through RewardModelScorer)."""
    from tailorlm.train.align.data import fit_rows, load_preferences, split_rows, to_rows
    from tailorlm.train.align.scorer import RewardModelScorer

    recipe = load_config(RewardRecipe, run_dir / "config.yaml")
    seed = recipe.training.seed
    _, held = split_rows(load_preferences(recipe.data, seed=seed), None, recipe.eval_fraction, seed)
    assert held is not None
    scorer = RewardModelScorer(run_dir / "artifacts")
    rows, _ = fit_rows(to_rows(held), scorer.engine.tokenizer, recipe.training.max_length, "held-out")
    prompts = [r["prompt"] for r in rows]
    chosen = np.asarray(scorer.score(prompts, [r["chosen"][-1]["content"] for r in rows]))
    rejected = np.asarray(scorer.score(prompts, [r["rejected"][-1]["content"] for r in rows]))
    # score_rows (what the run called) and the scorer's public API agree on the loaded model.
    again = score_rows(scorer.engine.model, scorer.engine.tokenizer, rows)
    np.testing.assert_allclose(again[0], chosen, atol=1e-6)
    np.testing.assert_allclose(again[1], rejected, atol=1e-6)
    lengths = np.asarray(
        [len(r["chosen"][-1]["content"]) for r in rows] + [len(r["rejected"][-1]["content"]) for r in rows]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics["held_out"], pairwise_report(chosen, rejected, lengths)


def _assert_same_report(ran: dict[str, Any], rescored: dict[str, Any]) -> None:
    assert rescored["pairs"] == ran["pairs"]
    assert rescored["accuracy"] == ran["accuracy"]
    for key in ("margin_mean", "reward_mean", "reward_std", "reward_length_corr"):
        assert rescored[key] == pytest.approx(ran[key], abs=1e-4), key
    for q, value in ran["margin_quantiles"].items():
        assert rescored["margin_quantiles"][int(q)] == pytest.approx(value, abs=1e-4), q


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Any]:
    """One ``tailor train reward`` run; a learning rate high enough that the score layer moves off its init."""
    tmp = tmp_path_factory.mktemp("reward-cli")
    data = _write_pairs(tmp / "pairs.jsonl")
    args = [str(RECIPE), f"model={tiny_model_dir}", f"data.path={data}", "training.max_steps=3"]
    args += ["training.batch_size=4", "training.max_length=128", "training.learning_rate=3e-3"]
    result = _cli(*args, "--runs-root", str(tmp / "runs"))
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir, result


def test_cli_reports_held_out_accuracy_and_saves_a_reward_system(cli_run: tuple[Path, Any]) -> None:
    run_dir, result = cli_run
    assert "held-out pairwise accuracy (95% CI)" in result.output and "(n=3)" in result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    held = metrics["held_out"]
    assert held["pairs"] == 3  # 20% of 16, seeded
    assert 0 <= held["accuracy"] <= 1 and held["ci_low"] <= held["accuracy"] <= held["ci_high"]
    assert metrics["steps"] == 3 and metrics["learning_rate"] == 3e-3
    assert (run_dir / "margins.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    system = System.load(run_dir / "artifacts")
    assert system.head is not None and system.head.problem == "regression" and system.head.max_length == 128
    (adapter,) = system.adapters
    assert (Path(adapter.path) / "adapter_config.json").is_file() and system.created_by == run_dir.name


def test_the_scorer_reproduces_the_runs_held_out_scores(cli_run: tuple[Path, Any]) -> None:
    """The System on disk (adapter + trained score layer) gives the scores the run computed in memory."""
    ran, rescored = _rescored_held_out(cli_run[0])
    assert ran["reward_std"] > 1e-3  # the scores are spread enough for the comparison to mean something
    _assert_same_report(ran, rescored)


def test_the_scorer_tokenizes_as_the_trainer_did(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The rewards TRL's collator feeds the loss equal ``score_rows`` on the same conversations."""
    recipe = _recipe(tmp_path, tiny_model_dir, "strategy.dropout=0")
    with Run.create("reward", root=tmp_path / "runs", config=recipe) as run:
        trainer, held_rows = build_reward_trainer(recipe, run)
    from tailorlm.train.align.scorer import _ids

    examples = [trainer.train_dataset[i] for i in range(4)]
    # TRL's tokenization put the prompt in front of each side; the rows the scorer reads keep them apart.
    rows = [
        {k: e[k][len(e["prompt"]) :] if k != "prompt" else e[k] for k in ("prompt", "chosen", "rejected")}
        for e in examples
    ]
    for e, r in zip(examples, rows, strict=True):
        assert _ids(trainer.processing_class, [*r["prompt"], *r["chosen"]]) == e["chosen_ids"]
        assert _ids(trainer.processing_class, [*r["prompt"], *r["rejected"]]) == e["rejected_ids"]
    batch = trainer.data_collator(examples)
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    chosen, rejected = score_rows(model, trainer.processing_class, rows)
    np.testing.assert_allclose(logits[:4].numpy(), chosen, atol=1e-5)
    np.testing.assert_allclose(logits[4:].numpy(), rejected, atol=1e-5)
    assert len(held_rows) == 3 and len(trainer.train_dataset) == 13


def test_overfitting_four_pairs_lowers_the_loss_and_trains_only_the_adapter_and_head(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        "eval_fraction=0",
        "training.max_steps=15",
        "training.learning_rate=5e-3",
        "training.lr_scheduler=constant",
        "training.warmup_ratio=0",
        n=4,
    )
    snap = Snapshot()
    with Run.create("reward", root=tmp_path / "runs", config=recipe) as run:
        fit_reward(recipe, run, callbacks=[snap])
    losses = _losses(run.path)
    assert len(losses) == 15
    assert losses[1] == pytest.approx(np.log(2), abs=0.02)  # untrained: r(chosen) ≈ r(rejected)
    assert losses[15] < 0.5 * losses[1], losses
    changed = snap.changed()
    assert any("lora_" in n for n in changed) and any("score.modules_to_save" in n for n in changed), sorted(changed)
    # PEFT SEQ_CLS trains a copy of the new head; the base weights and the original head stay as they were.
    assert all("lora_" in n or "score.modules_to_save" in n for n in changed), sorted(changed)
    assert "held_out" not in json.loads((run.path / "metrics.json").read_text())  # eval_fraction=0
    assert not (run.path / "margins.png").exists()


def test_top_n_blocks_puts_the_adapter_in_the_last_block_only(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        "strategy.train_top_n_blocks=1",
        "training.max_steps=2",
        "training.learning_rate=1e-2",
    )
    snap = Snapshot()
    with Run.create("reward", root=tmp_path / "runs", config=recipe) as run:
        system = fit_reward(recipe, run, callbacks=[snap])
    changed = snap.changed()
    lora = {n for n in changed if "lora_" in n}
    assert lora and all(".layers.1." in n for n in lora), sorted(changed)
    assert changed - lora and all("score.modules_to_save" in n for n in changed - lora)
    saved = load_file(Path(system.adapters[0].path) / "adapter_model.safetensors")
    saved_lora = [k for k in saved if "lora_" in k]
    assert saved_lora and all(".layers.1." in k for k in saved_lora), sorted(saved)
    assert any(k.startswith("base_model.model.score") for k in saved), sorted(saved)


def test_full_training_saves_a_model_the_scorer_loads(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "strategy.method=full", "training.learning_rate=1e-3")
    with Run.create("reward", root=tmp_path / "runs", config=recipe) as run:
        system = fit_reward(recipe, run)
    assert Path(system.model) == run.artifacts / "model" and not system.adapters
    assert (run.artifacts / "model" / "config.json").is_file() and (
        run.artifacts / "model" / "tokenizer.json"
    ).is_file()
    assert System.load(run.artifacts).head.problem == "regression"  # type: ignore[union-attr]
    _assert_same_report(*_rescored_held_out(run.path))


class StopAt(TrainerCallback):
    """Simulates a killed run: training stops after ``step`` (its checkpoint is written first)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_training_stop = True


def _adapter_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "artifacts" / "adapter" / "adapter_model.safetensors")


def test_resume_from_the_cli_matches_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "training.max_steps=4", "training.save_steps=2")
    with Run.create("whole", root=tmp_path / "runs", config=recipe, kind="reward") as whole:
        fit_reward(recipe, whole)
    with Run.create("killed", root=tmp_path / "runs", config=recipe, kind="reward") as killed:
        fit_reward(recipe, killed, callbacks=[StopAt(2)])
    shutil.rmtree(killed.artifacts)  # killed after checkpoint-2: nothing was saved beyond it
    # An incomplete checkpoint (killed mid-save) must be ignored in favour of the last complete one.
    (killed.path / "checkpoints" / "checkpoint-3").mkdir()

    result = _cli("--resume", str(killed.path))  # the recipe is the run's config.yaml
    assert result.exit_code == 0, result.output
    assert sorted(_losses(killed.path)) == [1, 2, 3, 4]  # steps 3-4 continued from checkpoint-2
    for step in (3, 4):
        assert _losses(killed.path)[step] == pytest.approx(_losses(whole.path)[step], rel=1e-5)
    a, b = _adapter_weights(whole.path), _adapter_weights(killed.path)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    held = [json.loads((r / "metrics.json").read_text())["held_out"] for r in (whole.path, killed.path)]
    assert held[1]["margin_mean"] == pytest.approx(held[0]["margin_mean"], abs=1e-6)


def test_resume_after_the_last_checkpoint_trains_nothing_more(tmp_path: Path, tiny_model_dir: Path) -> None:
    # Killed in the final save: checkpoint-2 of 2 steps is whole, the adapter is not. Resuming saves, never steps.
    recipe = _recipe(tmp_path, tiny_model_dir, "training.max_steps=2", "training.save_steps=2")
    with Run.create("whole", root=tmp_path / "runs", config=recipe, kind="reward") as whole:
        fit_reward(recipe, whole)
    before = _adapter_weights(whole.path)
    shutil.rmtree(whole.artifacts)
    with Run.reopen(whole.path) as resumed:
        fit_reward(recipe, resumed, resume=True)
    assert sorted(_losses(resumed.path)) == [1, 2]
    metrics = json.loads((resumed.path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and np.isfinite(metrics["train_loss"])
    after = _adapter_weights(resumed.path)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value)


def test_an_identical_pair_is_an_error_with_file_and_line_unless_skipped(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write_pairs(tmp_path / "pairs.jsonl", 16, identical_at=5)
    args = [str(RECIPE), f"model={tiny_model_dir}", f"data.path={data}", "training.max_steps=1"]
    args += ["training.batch_size=4", "training.max_length=128", "--runs-root", str(tmp_path / "runs")]
    failed = _cli(*args)
    assert failed.exit_code == 1, failed.output
    assert f"{data}:5: rejected: identical to chosen" in failed.output and "Traceback" not in failed.output

    skipped = _cli(*args[:-1], str(tmp_path / "skipped"), "data.skip_invalid=true")
    assert skipped.exit_code == 0, skipped.output
    (run_dir,) = (tmp_path / "skipped").iterdir()
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train_pairs"] + first["held_out_pairs"] == 15  # the bad record is left out, the rest train
    assert "skipped 1 invalid records" in (run_dir / "logs" / "run.log").read_text()
