"""The plan names what dominates a rung's eval time and the setting that cuts it (issue #15: a long-answer task with
max_new_tokens 160 took 18 s per batch closed-book and 40 s with RAG, and nothing said why)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tailorlm.core.task import Task
from tailorlm.ladder.context import LadderContext
from tailorlm.ladder.plan import Calibration, plan_table
from tailorlm.ladder.result import Estimate
from tailorlm.ladder.rungs import RUNGS

pytestmark = pytest.mark.unit


@pytest.fixture
def cal(tmp_path: Path) -> Calibration:
    rows = [{"input": f"q{i}?", "reference": "a short answer"} for i in range(16)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text(
        "name: t\neval: {path: eval.jsonl}\nmetrics: [rougeL]\ngeneration: {max_new_tokens: 160}\n"
    )
    task = Task.load(tmp_path / "task.yaml")
    ctx = LadderContext(task=task, config=task.ladder, model="default", dir=tmp_path / "ladder", progress=False)
    calibration = Calibration(ctx, Console(file=None, quiet=True))
    calibration.reference_tokens = lambda: 40.0  # type: ignore[method-assign]  # no tokenizer in a unit test
    calibration.step_s = 18.0 / 160  # the closed-book batch: 160 decoding steps in 18 s
    return calibration


def test_closed_book_batch_that_decodes_to_the_cap_says_lower_max_new_tokens(cal: Calibration) -> None:
    driver = cal.cost_driver(RUNGS["zero-shot"], 18.0, 160, 40.0, 160)
    assert driver is not None
    assert "decoding is 100%" in driver and "answers average 40 tokens" in driver
    assert "lower `generation.max_new_tokens`" in driver


def test_rag_batch_names_both_decoding_and_prefill(cal: Calibration) -> None:
    driver = cal.cost_driver(RUNGS["rag"], 40.0, 160, 1200.0, 160)
    assert driver is not None
    assert "decoding is 45%" in driver and "max_new_tokens" in driver
    assert "prefill of 1200 prompt tokens per question is 55%" in driver and "ladder.rag.top_k" in driver


def test_answers_that_stop_on_their_own_are_not_blamed_on_the_cap(cal: Calibration) -> None:
    assert cal.cost_driver(RUNGS["zero-shot"], 2.0, 12, 40.0, 160) is None
    # Answers as long as the cap: a lower cap would truncate them; say what does cut time instead.
    cal.reference_tokens = lambda: 150.0  # type: ignore[method-assign]
    driver = cal.cost_driver(RUNGS["zero-shot"], 18.0, 160, 40.0, 160)
    assert driver is not None and "ladder.eval_limit" in driver and "lower `generation" not in driver


def test_plan_table_puts_the_drivers_under_the_totals() -> None:
    plan = {"zero-shot": Estimate(build_s=0.5, eval_s=400, basis="b", dominant="decoding is 100% …: lower it")}
    table = plan_table([RUNGS["zero-shot"], RUNGS["rag"]], plan)
    assert table.caption is not None and "zero-shot: decoding is 100%" in str(table.caption)
