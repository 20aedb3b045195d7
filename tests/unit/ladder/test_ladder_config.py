"""The ladder's settings, rung selection and content keys: what is reused and what is rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailorlm.core.task import Task
from tailorlm.errors import ConfigError
from tailorlm.ladder.cache import data_fingerprints, rung_key
from tailorlm.ladder.config import LadderConfig, quick
from tailorlm.ladder.rungs import RUNGS, applicable, is_reasoning_task

pytestmark = pytest.mark.unit


def write_task(folder: Path, extra: str = "", *, train: bool = True, docs: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.jsonl").write_text(json.dumps({"input": "Who?", "reference": ["Rollo"]}) + "\n")
    text = "name: t\neval: {path: eval.jsonl}\n"
    if train:
        (folder / "train.jsonl").write_text(json.dumps({"input": "Who was?", "reference": ["Drogo"]}) + "\n")
        text += "train: {path: train.jsonl}\n"
    if docs:
        (folder / "docs").mkdir(exist_ok=True)
        (folder / "docs" / "a.md").write_text("# A\n\nRollo founded Normandy.\n")
        text += "documents: {path: docs}\n"
    (folder / "task.yaml").write_text(text + extra)
    return folder / "task.yaml"


def test_unknown_ladder_key_names_file_and_field(tmp_path: Path) -> None:
    path = write_task(tmp_path, "ladder:\n  rag: {top_kk: 3}\n")
    with pytest.raises(ConfigError) as err:
        Task.load(path)
    assert "task.yaml" in str(err.value) and "top_kk" in str(err.value) and "top_k" in str(err.value)


def test_quick_shrinks_sizes_and_keeps_rungs() -> None:
    cfg = LadderConfig(rungs=["zero-shot", "rag"], eval_limit=60, canary_limit=5)
    q = quick(cfg)
    assert q.rungs == ["zero-shot", "rag"]
    assert q.eval_limit == 8 and q.canary_limit == 5  # a smaller limit than the preset's is kept
    assert q.sft.max_steps is not None and q.sft.max_records is not None
    assert quick(LadderConfig()).eval_limit == 8  # no limit → the preset's


def test_rungs_apply_by_the_data_the_task_has(tmp_path: Path) -> None:
    task = Task.load(write_task(tmp_path / "none", train=False, docs=False))
    why = {r.name: reason for r, reason in applicable(task)}
    assert why["zero-shot"] is None
    assert "training data" in why["few-shot"] and "training data" in why["lora"]
    assert "documents" in why["rag"] and why["rag-lora"]
    assert "reasoning" in why["chain-of-thought"]
    full = Task.load(write_task(tmp_path / "full"))
    why = {r.name: reason for r, reason in applicable(full)}
    assert all(why[n] is None for n in ("zero-shot", "few-shot", "optimized-prompt", "rag", "rag-few-shot", "lora",
                                         "rag-lora"))  # fmt: skip


def test_named_rungs_keep_ladder_order_and_unknown_names_fail(tmp_path: Path) -> None:
    task = Task.load(write_task(tmp_path))
    assert [r.name for r, _ in applicable(task, ["rag-lora", "zero-shot"])] == ["zero-shot", "rag-lora"]
    with pytest.raises(ConfigError, match="did you mean 'rag-lora'"):
        applicable(task, ["rag_lora"])


def test_reasoning_tasks_are_recognised_by_numeric_answers(tmp_path: Path) -> None:
    task = Task.load(write_task(tmp_path))
    assert is_reasoning_task(task, [["18"], ["3.5"], ["1,200"]])
    assert not is_reasoning_task(task, [["Rollo"], ["Drogo"], ["12"]])


def test_every_rung_says_what_it_needs_and_what_it_must_beat() -> None:
    for rung in RUNGS.values():
        assert rung.uses <= {"train", "documents", "preference"}
        assert rung.below is None or rung.below in RUNGS
        assert set(rung.config_keys) <= set(LadderConfig.model_fields)


def test_keys_change_with_what_a_rung_reads_and_nothing_else(tmp_path: Path) -> None:
    path = write_task(tmp_path)
    base = Task.load(path)

    def key(task: Task, name: str) -> str:
        r = RUNGS[name]
        return rung_key(task, name, "default", r.config_keys, set(r.uses))

    keys = {n: key(base, n) for n in ("zero-shot", "rag", "lora")}
    assert len(set(keys.values())) == 3  # the rung's name is part of its key
    assert keys == {n: key(Task.load(path), n) for n in keys}  # stable across loads

    top_k = Task.load(path, ["ladder.rag.top_k=7"])
    assert key(top_k, "rag") != keys["rag"]
    assert key(top_k, "lora") == keys["lora"] and key(top_k, "zero-shot") == keys["zero-shot"]

    (tmp_path / "docs" / "a.md").write_text("# A\n\nRollo founded Normandy in 911.\n")
    assert key(base, "rag") != keys["rag"] and key(base, "lora") == keys["lora"]

    (tmp_path / "eval.jsonl").write_text(json.dumps({"input": "Who?", "reference": ["Hrólfr"]}) + "\n")
    assert key(base, "zero-shot") != keys["zero-shot"]  # every rung is scored on the eval set


def test_data_fingerprints_cover_only_the_data_used(tmp_path: Path) -> None:
    task = Task.load(write_task(tmp_path))
    assert set(data_fingerprints(task, set())) == {"eval"}
    assert set(data_fingerprints(task, {"train", "documents"})) == {"eval", "train", "documents"}


def test_naming_chain_of_thought_runs_it_on_any_task(tmp_path: Path) -> None:
    task = Task.load(write_task(tmp_path))
    assert dict((r.name, w) for r, w in applicable(task, ["chain-of-thought"]))["chain-of-thought"] is None


def test_training_records_read_as_eval_records_or_chat(tmp_path: Path) -> None:
    from tailorlm.ladder.context import LadderContext

    path = write_task(tmp_path, "input_template: 'Q: {{ input }}'\n")
    task = Task.load(path)
    ctx = LadderContext(task=task, config=task.ladder, model="default", dir=tmp_path / "ladder")
    [ex] = ctx.train_examples()
    assert (ex.text, ex.reference) == ("Q: Who was?", ["Drogo"])  # through the task's template, as eval inputs

    turns = [{"role": "user", "content": "Who founded Normandy?"}, {"role": "assistant", "content": "Rollo"}]
    chat = {"messages": turns}
    (tmp_path / "train.jsonl").write_text(json.dumps(chat) + "\n")
    ctx = LadderContext(task=task, config=task.ladder, model="default", dir=tmp_path / "ladder")
    [ex] = ctx.train_examples()
    assert (ex.text, ex.reference) == ("Who founded Normandy?", ["Rollo"])


def test_keys_change_with_the_engine_that_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_task(tmp_path)
    monkeypatch.delenv("TAILOR_ENGINE", raising=False)

    def key(task: Task) -> str:
        return rung_key(task, "zero-shot", "default", RUNGS["zero-shot"].config_keys, set(RUNGS["zero-shot"].uses))

    auto = key(Task.load(path))
    assert key(Task.load(path, ["ladder.engine=hf"])) != auto
    endpoint = ["ladder.engine=openai", "ladder.engine_options.base_url=http://127.0.0.1:8000/v1"]
    assert key(Task.load(path, endpoint)) not in (auto, key(Task.load(path, ["ladder.engine=openai"])))
    monkeypatch.setenv("TAILOR_ENGINE", "hf")
    assert key(Task.load(path)) != auto
