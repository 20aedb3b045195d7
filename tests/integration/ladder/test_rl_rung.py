"""A task with training records and a reference-scored metric climbs zero-shot and the rl rung on a tiny random
model: the rung is planned from timed steps, trains with the task's metric as its reward, scores and lands in the
report; an unchanged ladder is read back from its cache; tasks without a verifiable reward skip it with a reason."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tailorlm.core.system import System
from tailorlm.core.task import Task
from tailorlm.ladder.rungs import applicable
from tailorlm.ladder.runner import Ladder

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

QA = [("What is 2 + 2?", "4"), ("Capital of France?", "Paris"), ("Colour of the sky?", "blue"),
      ("Opposite of up?", "down"), ("3 + 3?", "6"), ("Animal that barks?", "dog")]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """A 32-wide model gains nothing from a second thread; on a shared 2-core machine two threads wait on each
    other at every op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_task(folder: Path, metrics: str = "[f1, exact_match]") -> Path:
    train = [{"input": q, "reference": [a, a.lower()]} for q, a in QA]
    evals = [{"input": f"She asks: {q}", "reference": a} for q, a in QA[:4]]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (folder / "task.yaml").write_text(
        f"name: tiny-rl\neval: {{path: eval.jsonl}}\ntrain: {{path: train.jsonl}}\nmetrics: {metrics}\n"
        "generation: {max_new_tokens: 8, stop: ['\\n']}\n"
        "ladder:\n  batch_size: 4\n  canary_limit: 3\n  probes: {enabled: false}\n"
        "  rl: {max_steps: 2, batch_size: 2, group_size: 2, max_length: 128}\n"
    )
    return folder / "task.yaml"


@pytest.fixture
def rl_task(tmp_path: Path) -> Iterator[Path]:
    old = os.environ.get("TAILOR_CACHE")
    os.environ["TAILOR_CACHE"] = str(tmp_path / "cache")
    yield _write_task(tmp_path)
    if old is None:
        os.environ.pop("TAILOR_CACHE", None)
    else:
        os.environ["TAILOR_CACHE"] = old


def test_rl_rung_plans_trains_reports_and_caches(rl_task: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    task = Task.load(rl_task)
    rungs = ["zero-shot", "rl"]
    out = tmp_path / "ladder"
    outcome = Ladder(task, model=str(tiny_model_dir), out=out, rungs=rungs, progress=False).run()
    by_name = {r.name: r for r in outcome.results}
    assert set(by_name) == set(rungs) and all(r.error is None for r in by_name.values()), outcome.results
    assert "rl" in outcome.plan and outcome.plan["rl"].build_s > 0  # planned from timed steps like SFT
    rl = by_name["rl"]
    assert rl.family == "alignment" and any("2 steps" in n and "f1 reward" in n for n in rl.notes), rl.notes
    system = System.load(out / "rungs" / "rl" / "system" / "system.yaml")
    assert system.adapters and system.model == str(tiny_model_dir)
    (run_dir,) = [d for d in (out / "rungs" / "rl" / "runs").iterdir() if (d / "samples.jsonl").is_file()]
    rewards = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rewards if "reward" in r] == [1, 2]
    assert (run_dir / "rl-curves.png").is_file() and "Step 1 (start)" in (run_dir / "samples.md").read_text()
    assert {s.rung: s.below for s in outcome.recommendation.steps}.get("rl") == "zero-shot"
    again = Ladder(task, model=str(tiny_model_dir), out=out, rungs=rungs, progress=False).run()
    assert all(r.cached for r in again.results)


def test_tasks_without_a_verifiable_reward_skip_the_rl_rung(tmp_path: Path) -> None:
    tool_scored = Task.load(_write_task(tmp_path, "[tool_call_valid]"))
    ((_, why),) = applicable(tool_scored, ["rl"])
    assert why and "reference" in why and "tool_call_valid" in why
    ((_, why),) = applicable(Task.load(EXAMPLES / "xquad/task.yaml"), ["rl"])  # no train: records
    assert why and "training data" in why
    with_train = Task.load(EXAMPLES / "sst2-ladder/task.yaml")
    ((_, why),) = applicable(with_train, ["rl"])
    assert why is None  # accuracy against the label: a verifiable reward
