"""A task with preference pairs climbs zero-shot and the dpo rung on a tiny random model: the rung is planned,
trains, scores and lands in the report with the bias and safety probes of the recommended System; an unchanged
ladder is read back from its cache; a task without pairs skips it with a reason."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailorlm.core.task import Task
from tailorlm.ladder.rungs import applicable
from tailorlm.ladder.runner import Ladder

pytestmark = pytest.mark.integration

QUESTIONS = [
    ("What is 2 + 2?", "4", "5"),
    ("Capital of France?", "Paris", "Rome"),
    ("Colour of the sky?", "blue", "red"),
    ("Opposite of up?", "down", "left"),
    ("3 + 3?", "6", "9"),
    ("Animal that barks?", "dog", "cat"),
]


@pytest.fixture
def pref_task(tmp_path: Path) -> Iterator[Path]:
    old = os.environ.get("TAILOR_CACHE")
    os.environ["TAILOR_CACHE"] = str(tmp_path / "cache")
    pairs = [{"prompt": q, "chosen": good, "rejected": bad} for q, good, bad in QUESTIONS]
    evals = [{"input": f"She asks: {q}", "reference": good} for q, good, _ in QUESTIONS[:4]]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (tmp_path / "task.yaml").write_text(
        "name: tiny-prefs\neval: {path: eval.jsonl}\npreference: {path: pairs.jsonl}\n"
        "metrics: [exact_match]\ngeneration: {max_new_tokens: 8}\n"
        "ladder:\n  batch_size: 4\n  canary_limit: 3\n  dpo: {max_steps: 2, batch_size: 2, max_length: 128}\n"
        "  probes: {limit: 3, max_new_tokens: 8}\n"
    )
    yield tmp_path / "task.yaml"
    if old is None:
        os.environ.pop("TAILOR_CACHE", None)
    else:
        os.environ["TAILOR_CACHE"] = old


def test_dpo_rung_plans_trains_reports_and_caches(pref_task: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    task = Task.load(pref_task)
    rungs = ["zero-shot", "dpo"]
    out = tmp_path / "ladder"
    outcome = Ladder(task, model=str(tiny_model_dir), out=out, rungs=rungs, progress=False).run()
    by_name = {r.name: r for r in outcome.results}
    assert set(by_name) == set(rungs) and all(r.error is None for r in by_name.values()), outcome.results
    assert "dpo" in outcome.plan and outcome.plan["dpo"].build_s > 0  # planned from timed steps like SFT
    dpo = by_name["dpo"]
    assert dpo.family == "alignment" and any("steps" in n for n in dpo.notes)
    system = (out / "rungs" / "dpo" / "system" / "system.yaml").read_text()
    assert "adapter" in system
    # The recommended System's probes ran and are in the report, with what they cannot show.
    probes = json.loads((out / "probes" / "probes.json").read_text())
    assert "harmlessness" in probes["ran"] and probes["limits"]
    summary = (out / "report" / "summary.md").read_text()
    assert "Bias and safety checks" in summary and "refusal rate" in summary
    again = Ladder(task, model=str(tiny_model_dir), out=out, rungs=rungs, progress=False).run()
    assert all(r.cached for r in again.results)


def test_tasks_without_pairs_skip_the_dpo_rung() -> None:
    task = Task.load(Path(__file__).resolve().parents[3] / "examples/xquad-qa/task.yaml")
    ((_, why),) = applicable(task, ["dpo"])
    assert why and "preference" in why
