"""Hyperparameter search end to end on a tiny random model: 3 trials (one pruned by the median rule), each its own
child Run, the trials files and the best System; a killed search resumes from its SQLite study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tailorlm.core.run import read_run
from tailorlm.core.system import System
from tailorlm.train.search import search

pytestmark = pytest.mark.integration

QUESTIONS = ["what is two plus two?", "capital of France?", "capital of Italy?", "say hello"]
ANSWERS = ["four", "Paris", "Rome", "hello, world!"]


def _files(tmp_path: Path, model: Path, *, enqueue: list[dict], pruner: dict) -> tuple[Path, Path]:
    chats = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    chats.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "name": "tiny",
        "model": str(model),
        "data": {"path": str(chats)},
        # Eval on the training chats: full fine-tuning at 1e-2 lowers that loss from the first step, a 1e-7
        # learning rate leaves it where it started, so the median rule's verdict is certain.
        "eval_data": {"path": str(chats)},
        "strategy": {"method": "full"},
        "training": {
            "max_steps": 4,
            "batch_size": 4,
            "eval_steps": 2,
            "warmup_ratio": 0,
            "lr_scheduler": "constant",
            "save_total_limit": 1,
        },
        "canaries": {"enabled": False},
    }
    space = {
        "params": {
            "training.learning_rate": {"type": "float", "low": 1e-7, "high": 1e-2, "log": True},
            "strategy.target_modules": {"type": "categorical", "choices": {"all": "all-linear", "attn": ["q_proj"]}},
        },
        "enqueue": enqueue,
        "sampler": {"seed": 0},
        "pruner": pruner,
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    return tmp_path / "recipe.yaml", tmp_path / "space.yaml"


FAST = {"training.learning_rate": 1e-2, "strategy.target_modules": "all"}
SLOW = {"training.learning_rate": 1e-7, "strategy.target_modules": "attn"}


def test_three_trials_one_pruned_best_system_and_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe, space = _files(
        tmp_path, tiny_model_dir, enqueue=[FAST, FAST, SLOW], pruner={"n_startup_trials": 2, "n_warmup_steps": 0}
    )
    seen = []
    result = search(recipe, space, n_trials=3, runs_root=tmp_path / "runs", on_trial=seen.append)

    states = [r.state for r in result.trials]
    assert states == ["complete", "complete", "pruned"], result.trials
    assert [r.number for r in seen] == [0, 1, 2]
    pruned = result.trials[2]
    assert pruned.pruned_at_step == 2 and pruned.params == SLOW
    assert result.best is not None and result.best.number in (0, 1)
    assert result.best.score == pytest.approx(min(r.score for r in result.trials[:2]))

    # every trial is its own Run, a child of the search Run; checkpoints are gone, artifacts stay
    for row in result.trials:
        info = read_run(row.run)
        assert info.status == "complete" and info.parent == result.run.id and info.kind == "search-trial"
        assert not (Path(row.run) / "checkpoints").exists()
    assert json.loads((Path(pruned.run) / "metrics.json").read_text())["state"] == "pruned"

    # the best System loads and points at the best trial's model
    assert result.best_system == result.run.path / "best" / "system.yaml"
    best = System.load(result.best_system)
    assert Path(best.model).resolve() == (Path(result.best.run) / "artifacts" / "model").resolve()

    with open(result.run.path / "trials.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["state"] for t in table] == states and "training.learning_rate" in table[0]
    lines = (result.run.path / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["state"] == "pruned"
    metrics = json.loads((result.run.path / "metrics.json").read_text())
    assert metrics["best_trial"] == result.best.number and metrics["trials"]["pruned"] == 1
    assert (result.run.path / "study.db").is_file()


def test_a_killed_search_resumes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Kill the search inside trial 1: on resume trial 0 is kept and the interrupted point runs again."""
    from transformers import TrainerCallback

    recipe, space = _files(tmp_path, tiny_model_dir, enqueue=[FAST, SLOW], pruner={"type": "none"})

    class Kill(TrainerCallback):
        def __init__(self, number: int) -> None:
            self.number = number

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if self.number == 1:
                raise KeyboardInterrupt  # what Ctrl-C does mid-trial

    with pytest.raises(KeyboardInterrupt):
        search(recipe, space, n_trials=2, runs_root=tmp_path / "runs", callbacks=lambda n: [Kill(n)])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert read_run(run_dir).status == "interrupted"

    result = search(None, None, resume=run_dir)
    states = [r.state for r in result.trials]
    # trial 1 was interrupted (fail) and re-queued with its parameters as trial 2, which completes the count
    assert states == ["complete", "fail", "complete"], result.trials
    assert result.trials[2].params == result.trials[1].params == SLOW
    assert read_run(run_dir).status == "complete"
    assert result.best_system is not None and result.best_system.is_file()


def test_cli_search_scored_by_a_task_metric(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`tailor train sft RECIPE --search SPACE --task TASK`: trials are scored by the task's primary metric through
    the eval harness (maximised), and the CLI prints the trials table and the best System."""
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    recipe, space = _files(tmp_path, tiny_model_dir, enqueue=[FAST, SLOW], pruner={"type": "none"})
    (tmp_path / "dev.jsonl").write_text(
        "".join(json.dumps({"input": q, "reference": a}) + "\n" for q, a in zip(QUESTIONS, ANSWERS, strict=True))
    )
    task = tmp_path / "task.yaml"
    task.write_text(
        yaml.safe_dump(
            {"name": "dev", "eval": {"path": "dev.jsonl"}, "metrics": ["f1"], "generation": {"max_new_tokens": 4}}
        )
    )
    args = ["train", "sft", str(recipe), "--search", str(space), "--trials", "2", "--task", str(task)]
    result = CliRunner().invoke(app, [*args, "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "f1 ↑" in result.stdout and "best System:" in result.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metric"] == "f1" and metrics["direction"] == "maximize" and metrics["trials"]["complete"] == 2
    rows = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    for row in rows:
        trial_metrics = json.loads((Path(row["run"]) / "metrics.json").read_text())
        assert row["score"] == trial_metrics["task.f1"] == trial_metrics["score"]
        assert Path(trial_metrics["eval_run"]).is_dir()
