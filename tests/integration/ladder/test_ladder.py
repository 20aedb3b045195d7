"""`tailor ladder` end to end on a tiny random model: every rung builds, scores and reports; an unchanged ladder is
read back without loading a model; a failing rung is reported while the others complete; bad input fails before any
training. A killed ladder resumes without redoing finished rungs: the kill harness (test_kill_harness.py).

The answers of a random model are noise: these tests check the machinery, not the figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.system import System
from tailorlm.core.task import Task
from tailorlm.ladder.runner import Ladder

pytestmark = pytest.mark.integration
runner = CliRunner()

DOCS = {
    "normans.md": "# Normans\n\nRollo gave the Viking settlers of Normandy a common identity. "
    "Drogo was ennobled by Henry III.\n",
    "panthers.md": "# Panthers\n\nThe Panthers defense gave up just 308 points. Josh Norman intercepted four balls.\n",
    "bees.md": "# Bees\n\nA honeybee colony has one queen and thousands of workers.\n",
}
TRAIN = [
    ("Who gave the Viking settlers a common identity?", "Rollo"),
    ("Who was ennobled by Henry III?", "Drogo"),
    ("How many queens does a colony have?", "one"),
    ("How many balls did Josh Norman intercept?", "four"),
    ("What did the Viking settlers get from Rollo?", "a common identity"),
    ("Who had thousands of workers?", "A honeybee colony"),
]
EVAL = [
    ("How many points did the Panthers defense give up?", "308"),
    ("Who ennobled Drogo?", "Henry III"),
    ("What does a colony have thousands of?", "workers"),
    ("Where did the Viking settlers live?", "Normandy"),
]
RUNGS = "zero-shot,few-shot,rag,rag-lora"


def write_examples(path: Path, pairs: list[tuple[str, Any]]) -> None:
    """``{"input", "reference"}`` lines, one per (input, reference) pair."""
    path.write_text("".join(json.dumps({"input": x, "reference": y}) + "\n" for x, y in pairs))


def write_task(folder: Path, model: Path, *, extra: str = "") -> Path:
    (folder / "docs").mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():
        (folder / "docs" / name).write_text(text)
    write_examples(folder / "train.jsonl", [(q, [a]) for q, a in TRAIN])
    write_examples(folder / "eval.jsonl", [(q, [a]) for q, a in EVAL])
    (folder / "task.yaml").write_text(
        "name: tiny-qa\neval: {path: eval.jsonl}\ntrain: {path: train.jsonl}\ndocuments: {path: docs}\n"
        "input_template: 'Answer briefly. {{ input }}'\nmetrics: [exact_match, f1, contains_answer]\n"
        "primary_metric: f1\n"
        "generation: {max_new_tokens: 4}\n"
        "ladder:\n  batch_size: 2\n  canary_limit: 3\n  few_shot: {k: 2, selection: fixed}\n  rag: {top_k: 2}\n"
        "  sft: {max_steps: 2, batch_size: 2}\n" + extra
    )
    return folder / "task.yaml"


@pytest.fixture(scope="module")
def tailor_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private cache: predictions and canary scores of this module never leak into other tests' (or a user's)."""
    old = os.environ.get("TAILOR_CACHE")
    folder = tmp_path_factory.mktemp("ladder-cache")
    os.environ["TAILOR_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TAILOR_CACHE", None)
    else:
        os.environ["TAILOR_CACHE"] = old


@pytest.fixture(scope="module")
def climbed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tailor_cache: Path) -> Path:
    """One ladder run of the four demo rungs on the tiny task, shared by the tests that read its output."""
    folder = tmp_path_factory.mktemp("tiny-task")
    write_task(folder, tiny_model_dir)
    out = folder / "ladder"
    result = runner.invoke(
        app, ["ladder", str(folder / "task.yaml"), "--rungs", RUNGS, "--model", str(tiny_model_dir), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    # Each step's verdict is printed, not only written to the report.
    assert "RAG + LoRA (RAFT) beats RAG" in result.output or "RAG + LoRA (RAFT) does NOT beat RAG" in result.output
    return out


def results(out: Path) -> dict[str, dict]:
    state = json.loads((out / "ladder.json").read_text())
    return {r["name"]: r for r in state["rungs"]}


def test_every_rung_builds_scores_and_reports(climbed: Path) -> None:
    rungs = results(climbed)
    assert list(rungs) == RUNGS.split(",")
    for name, r in rungs.items():
        assert r["status"] == "complete", (name, r.get("error"))
        assert r["quality"]["metric"] == "f1" and r["quality"]["n"] == len(EVAL)
        assert set(r["metrics"]) == {"exact_match", "f1", "contains_answer"}
        assert r["build"]["peak_rss_mb"] > 0 and r["serve"]["prompt_tokens_per_query"] > 0
        # the plan's figure next to the measured one (a tiny model's estimates round to 0.0 s)
        assert r["estimate"]["eval_s"] >= 0 and r["estimate"]["basis"] and r["actual_s"] > 0
        assert r["canaries"] is not None
        assert (climbed / "rungs" / name / "result.json").is_file()
        assert System.load(r["system"]).name == name
    assert rungs["zero-shot"].get("vs_baseline") is None and rungs["rag"]["vs_baseline"]["other"] == "zero-shot"
    # RAG rungs make prompts longer; RAFT trains, builds an adapter and scores canaries before/after.
    assert rungs["rag"]["serve"]["prompt_tokens_per_query"] > rungs["zero-shot"]["serve"]["prompt_tokens_per_query"]
    # The index is built once (during the plan) but counts in the build time of every rung that uses it.
    for name in ("rag", "rag-lora"):
        assert rungs[name]["build"]["wall_s"] >= rungs[name]["build"]["detail"]["index"] > 0
    raft = rungs["rag-lora"]
    assert raft["build"]["tokens"] > 0 and raft["build"]["disk_mb"] > 0 and "training" in raft["build"]["detail"]
    assert {"before", "after", "drop"} <= set(raft["canaries"])
    raft_system = System.load(raft["system"])
    assert raft_system.adapters and raft_system.retriever is not None


def test_report_plan_and_best_system(climbed: Path) -> None:
    report = climbed / "report"
    for name in ("report.html", "summary.md", "pareto.png", "report.json"):
        assert (report / name).is_file(), name
    summary = (report / "summary.md").read_text()
    assert "## Rungs" in summary and "pareto.png" in summary and "## Recommendation" in summary
    assert "Plan vs actual" in summary
    assert (report / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plan = json.loads((climbed / "plan.json").read_text())
    assert set(plan["estimates"]) == set(RUNGS.split(","))
    state = json.loads((climbed / "ladder.json").read_text())
    chosen = state["recommendation"]["chosen"]
    assert chosen in RUNGS.split(",")
    best = System.load(climbed / "best")
    assert best.name.endswith(chosen)


def test_unchanged_ladder_is_read_back_without_a_model(climbed: Path, tiny_model_dir: Path) -> None:
    task = Task.load(climbed.parent / "task.yaml")
    before = {p: p.stat().st_mtime_ns for p in (climbed / "rungs").glob("*/result.json")}
    ladder = Ladder(task, model=str(tiny_model_dir), out=climbed, rungs=RUNGS.split(","), progress=False)
    outcome = ladder.run()
    assert all(r.cached for r in outcome.results)
    assert ladder.ctx._engine is None  # no rung loaded a model
    assert before == {p: p.stat().st_mtime_ns for p in (climbed / "rungs").glob("*/result.json")}


def test_a_changed_setting_rebuilds_only_the_rungs_that_read_it(climbed: Path, tiny_model_dir: Path) -> None:
    task = Task.load(climbed.parent / "task.yaml", ["ladder.few_shot.k=1"])
    outcome = Ladder(task, model=str(tiny_model_dir), out=climbed, rungs=RUNGS.split(","), progress=False).run()
    cached = {r.name: r.cached for r in outcome.results}
    assert cached == {"zero-shot": True, "few-shot": False, "rag": True, "rag-lora": True}


def test_the_other_prompting_and_rag_rungs_build(tmp_path: Path, tiny_model_dir: Path, tailor_cache: Path) -> None:
    extra = (
        "  rungs: [zero-shot, chain-of-thought, optimized-prompt, rag-few-shot]\n"
        "  chain_of_thought: {max_new_tokens: 8}\n  optimize: {budget: 2, k: 1, pool_size: 2, dev_size: 2}\n"
    )
    write_task(tmp_path, tiny_model_dir, extra=extra)
    outcome = Ladder(Task.load(tmp_path / "task.yaml"), model=str(tiny_model_dir), out=tmp_path / "ladder",
                     progress=False).run()  # fmt: skip
    rungs = {r.name: r for r in outcome.results}
    errors = {n: r.error for n, r in rungs.items() if r.status != "complete"}
    assert not errors and len(rungs) == 4, errors
    cot = System.load(rungs["chain-of-thought"].system or "")
    assert cot.generation is not None and cot.generation.max_new_tokens == 8
    assert rungs["optimized-prompt"].build is not None and rungs["optimized-prompt"].build.tokens > 0
    rag_few = System.load(rungs["rag-few-shot"].system or "")
    assert rag_few.retriever is not None and rag_few.prompt is not None
    # Few-shot and RAG were not run: each rung compares with the next rung down, zero-shot.
    steps = {s.rung: s.below for s in outcome.recommendation.steps}
    assert steps == dict.fromkeys(["chain-of-thought", "optimized-prompt", "rag-few-shot"], "zero-shot")


SENTIMENT_TRAIN = [("a joy to watch", "positive"), ("dull and far too long", "negative"),
                   ("a warm, funny film", "positive"), ("i wanted my money back", "negative"),
                   ("the cast is wonderful", "positive"), ("a mess from start to end", "negative")]  # fmt: skip
SENTIMENT_EVAL = [("funny and warm", "positive"), ("far too dull", "negative"), ("wonderful", "positive")]


def test_a_classification_task_gets_lora_and_a_head(tmp_path: Path, tiny_model_dir: Path,
                                                    tailor_cache: Path) -> None:  # fmt: skip
    write_examples(tmp_path / "train.jsonl", SENTIMENT_TRAIN)
    write_examples(tmp_path / "eval.jsonl", SENTIMENT_EVAL)
    (tmp_path / "task.yaml").write_text(
        "name: tiny-sentiment\neval: {path: eval.jsonl}\ntrain: {path: train.jsonl}\n"
        "input_template: 'Positive or negative? {{ input }}'\nmetrics: [accuracy, macro_f1]\n"
        "generation: {max_new_tokens: 2}\n"
        "ladder:\n  rungs: [zero-shot, few-shot, lora, head]\n  few_shot: {k: 2, selection: fixed}\n"
        "  batch_size: 2\n  canary_limit: 3\n"
        "  sft: {max_steps: 2, batch_size: 2}\n  head: {max_steps: 2, batch_size: 2}\n"
    )
    result = runner.invoke(app, ["ladder", str(tmp_path / "task.yaml"), "--model", str(tiny_model_dir),
                                 "--out", str(tmp_path / "ladder")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "could not be calibrated" not in result.output
    state = json.loads((tmp_path / "ladder" / "ladder.json").read_text())
    rungs = {r["name"]: r for r in state["rungs"]}
    assert {n: r["status"] for n, r in rungs.items()} == dict.fromkeys(rungs, "complete"), result.output
    assert len(rungs) == 4
    # The head names the rung it must beat (few-shot), as every registered rung does.
    steps = {s["rung"]: s["below"] for s in state["recommendation"]["steps"]}
    assert steps == {"few-shot": "zero-shot", "lora": "few-shot", "head": "few-shot"}
    head = System.load(rungs["head"]["system"])
    assert head.head is not None and head.head.labels == ["negative", "positive"]
    assert rungs["head"]["estimate"] is not None and rungs["lora"]["estimate"] is not None
    assert System.load(rungs["lora"]["system"]).adapters


def test_a_failing_rung_is_reported_and_the_ladder_goes_on(tmp_path: Path, tiny_model_dir: Path,
                                                            tailor_cache: Path) -> None:  # fmt: skip
    # qlora needs a CUDA GPU: on this machine the RAFT rung fails at once, with bitsandbytes' reason.
    write_task(tmp_path, tiny_model_dir, extra="  rungs: [zero-shot, rag-lora]\n")
    task = Task.load(tmp_path / "task.yaml", ["ladder.sft.method=qlora"])
    outcome = Ladder(task, model=str(tiny_model_dir), out=tmp_path / "ladder", progress=False).run()
    status = {r.name: r.status for r in outcome.results}
    assert status == {"zero-shot": "complete", "rag-lora": "failed"}
    failed = outcome.results[1]
    assert failed.error and "CUDA" in failed.error
    assert (tmp_path / "ladder" / "rungs" / "rag-lora" / "error.log").is_file()
    assert "FAILED" in (outcome.report.markdown).read_text()
    assert outcome.recommendation.chosen == "zero-shot"
    # Fixed, the next run builds the failed rung (and only it) and leaves no stale traceback behind.
    again = Ladder(Task.load(tmp_path / "task.yaml"), model=str(tiny_model_dir), out=tmp_path / "ladder",
                   progress=False).run()  # fmt: skip
    assert {r.name: (r.status, r.cached) for r in again.results} == {
        "zero-shot": ("complete", True), "rag-lora": ("complete", False),
    }  # fmt: skip
    assert not (tmp_path / "ladder" / "rungs" / "rag-lora" / "error.log").exists()


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("eval", ["eval.jsonl:2"]),
        ("docs", ["docs", "documents.path"]),
        ("key", ["task.yaml", "top_kk"]),
    ],
)
def test_bad_input_fails_before_any_training(tmp_path: Path, tiny_model_dir: Path, breakage: str,
                                             expected: list[str]) -> None:  # fmt: skip
    write_task(tmp_path, tiny_model_dir)
    if breakage == "eval":
        with (tmp_path / "eval.jsonl").open("a") as f:
            f.write("{not json\n")
        lines = (tmp_path / "eval.jsonl").read_text().splitlines()
        (tmp_path / "eval.jsonl").write_text("\n".join([lines[0], lines[-1], *lines[1:-1]]) + "\n")
    elif breakage == "docs":
        for f in (tmp_path / "docs").iterdir():
            f.unlink()
    else:
        with (tmp_path / "task.yaml").open("a") as f:
            f.write("  optimize: {}\n  rag2: 1\n".replace("rag2", "top_kk"))
    out = tmp_path / "ladder"
    result = runner.invoke(app, ["ladder", str(tmp_path / "task.yaml"), "--model", str(tiny_model_dir),
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    for needle in expected:
        assert needle in text, (needle, text)
    assert not (out / "rungs").exists()  # nothing built, nothing half-written


def test_the_plans_training_steps_are_the_first_steps_of_the_rung(tmp_path: Path, tiny_model_dir: Path,
                                                                  tailor_cache: Path) -> None:  # fmt: skip
    # 5 steps: the plan trains (and times) the first 3, and the rung resumes from that checkpoint.
    write_task(tmp_path, tiny_model_dir, extra="  rungs: [zero-shot, lora]\n  sft: {max_steps: 5, batch_size: 2}\n")
    out = tmp_path / "ladder"
    result = runner.invoke(app, ["ladder", str(tmp_path / "task.yaml"), "--model", str(tiny_model_dir),
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    lora = results(out)["lora"]
    assert lora["status"] == "complete" and lora["estimate"]["build_s"] > 0
    (run_dir,) = (Path(r) for r in lora["build_runs"])
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and len(meta["resumed_at"]) == 1
    steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5]  # each step once: none trained twice, none skipped
    assert not (out / "plan" / "lora" / "runs").exists()  # no throwaway calibration run
