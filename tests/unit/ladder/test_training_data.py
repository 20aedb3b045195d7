"""One reader of training records for every rung, and a preflight that agrees with the ladder, across data shapes.

Tasks are generated (hypothesis): arbitrary column names mapped by ``fields``; JSONL, CSV, TSV and Parquet; answers
as strings and lists; chat training files (OpenAI, Alpaca, ShareGPT); labels as strings and ints; documents with and
without gold ids; training files whose answer column is not mapped. For each, ``check_rungs`` (what `tailor init`
and `tailor ladder` print as "runs") must agree with what the ladder's own data preparation then does, rung by
rung, without a model.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailorlm.core.task import Task
from tailorlm.data.load import FIELD_TARGETS
from tailorlm.errors import TailorError
from tailorlm.ladder.context import LadderContext
from tailorlm.ladder.preflight import check_rungs, preflight
from tailorlm.ladder.rungs import RUNGS, Head, Lora, OptimizedPrompt, RagLora, few_shot_prompt
from tailorlm.ladder.training_data import load_training, raft_queries

pytestmark = pytest.mark.unit

TRAINING_RUNGS = ("few-shot", "optimized-prompt", "rag-few-shot", "lora", "rag-lora", "head")
RESERVED = {k.casefold() for k in FIELD_TARGETS} | {"id", "doc_ids", "gold", "instruction", "output"}
NEED_FOR_SEARCH = 5  # the generated tasks' optimize pool_size 2 + dev_size 2 + 1


# --- writing a generated task ------------------------------------------------------------------------------------


def _write(path: Path, rows: list[dict[str, Any]], container: str) -> Path:
    path = path.with_suffix("." + container)
    if container == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif container in ("csv", "tsv"):
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="," if container == "csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _chat(fmt: str, question: str, answer: str) -> dict[str, Any]:
    if fmt == "openai":
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    if fmt == "alpaca":
        return {"instruction": question, "input": "", "output": answer}
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


@dataclass
class Shape:
    question: str  # the input column's name
    answer: str  # the reference column's name
    container: str  # jsonl, csv, tsv, parquet
    answers: str  # str, list
    labels: str | None  # None: a QA task; str or int: a classification task with such labels
    train: str  # mapped, unmapped (the answer column has another name), openai, alpaca, sharegpt
    docs: str | None  # None, ids (train rows name their gold document), plain
    n_train: int

    @property
    def chat(self) -> bool:
        return self.train in ("openai", "alpaca", "sharegpt")


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    name = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True).filter(lambda n: n.casefold() not in RESERVED)
    question = draw(name)
    answer = draw(name.filter(lambda n: n.casefold() != question.casefold()))
    container = draw(st.sampled_from(["jsonl", "csv", "tsv", "parquet"]))
    labels = draw(st.sampled_from([None, "str", "int"]))
    # CSV cells are text: a list of answers is a JSON-in-a-cell convention the loaders do not read for references.
    answers = "str" if labels or container in ("csv", "tsv") else draw(st.sampled_from(["str", "list"]))
    train = draw(st.sampled_from(["mapped", "mapped", "unmapped", "openai", "alpaca", "sharegpt"]))
    docs = draw(st.sampled_from([None, "ids", "plain"]))
    return Shape(question, answer, container, answers, labels, train, docs, draw(st.integers(1, 9)))


def _answer(shape: Shape, i: int) -> Any:
    if shape.labels == "int":
        return i % 2
    if shape.labels == "str":
        return ["pos", "neg"][i % 2]
    text = f"answer number {i}"
    return [text, f"alt {i}"] if shape.answers == "list" else text


def build_task(root: Path, shape: Shape) -> Task:
    fields = {"input": shape.question, "reference": shape.answer}
    eval_rows = [{shape.question: f"eval question {i}?", shape.answer: _answer(shape, i)} for i in range(4)]
    eval_path = _write(root / "eval", eval_rows, shape.container)
    train_fields: dict[str, str] | None = fields
    if shape.chat:
        rows = [_chat(shape.train, f"train question {i}?", str(_answer(shape, i))) for i in range(shape.n_train)]
        train_path, train_fields = _write(root / "train", rows, "jsonl"), None
    else:
        column = shape.answer if shape.train == "mapped" else shape.answer + "_x"
        rows = [{shape.question: f"train question {i}?", column: _answer(shape, i)} for i in range(shape.n_train)]
        if shape.docs == "ids" and shape.container in ("jsonl", "parquet"):
            for i, row in enumerate(rows):
                row["doc_ids"] = [f"doc{i % 3}.md"]
        train_path = _write(root / "train", rows, shape.container)
    task: dict[str, Any] = {
        "name": "generated",
        "eval": {"path": eval_path.name, "fields": fields},
        "train": {"path": train_path.name, **({"fields": train_fields} if train_fields else {})},
        "metrics": ["accuracy"] if shape.labels else ["f1"],
        "input_template": "Q: {{ input }}",
        "ladder": {"optimize": {"pool_size": 2, "dev_size": 2}, "few_shot": {"pool": 4}},
    }
    if shape.docs:
        (root / "docs").mkdir()
        for d in range(3):
            (root / "docs" / f"doc{d}.md").write_text(
                f"# Doc {d}\n\n" + " ".join(f"answer number {i}." for i in range(9))
            )
        task["documents"] = {"path": "docs"}
    (root / "task.yaml").write_text(json.dumps(task))  # JSON is YAML
    return Task.load(root / "task.yaml")


# --- what the ladder's data preparation does, rung by rung (the build path, minus the model) ----------------------


def ladder_prepares(name: str, ctx: LadderContext) -> bool:
    """True when the code the ladder runs to build ``name``'s data succeeds and yields data."""
    try:
        if name in ("few-shot", "rag-few-shot"):
            return bool(few_shot_prompt(ctx).few_shot)
        if name == "optimized-prompt":
            return len(OptimizedPrompt().prepare(ctx)) >= NEED_FOR_SEARCH
        if name == "lora":
            records = Lora().training_records(ctx)
            return bool(records) and all(m["content"] for r in records for m in r["messages"])
        if name == "rag-lora":  # the questions RAFT retrieves for: a question, its answers, the template applied
            queries = RagLora().prepare(ctx)
            return bool(queries) and all(q.question and q.answers for q in queries)
        if name == "head":
            head = Head()
            return len(head.labels(ctx)) >= 2 and bool(head.training_records(ctx))
        if name == "constrained-labels":  # the label set comes from the training references
            from tailorlm.ladder.tool_rungs import ConstrainedLabels

            return len(ConstrainedLabels().prepare(ctx)) >= 2
        if name in ("rl", "dpo"):  # prompts with references; preference pairs
            from tailorlm.ladder.align_rungs import Dpo, Rl

            return bool((Rl() if name == "rl" else Dpo()).training_records(ctx))
        return True  # zero-shot, chain-of-thought, rag: no training data
    except TailorError:
        return False


def _context(task: Task, root: Path) -> LadderContext:
    return LadderContext(task=task, config=task.ladder, model="default", dir=root / "ladder", progress=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes())
def test_preflight_runs_column_agrees_with_the_ladders_data_preparation(shape: Shape) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = build_task(root, shape)
        needs = {"train"} | ({"documents"} if shape.docs else set())
        report = preflight(task, needs)  # no structural error for any generated shape
        checks = {c.name: c for c in check_rungs(task)}
        ctx = _context(task, root)  # a fresh context: nothing carried over from the check
        for name, check in checks.items():
            if check.applies:
                assert ladder_prepares(name, ctx) == check.runs, (name, check, shape)

        # Beyond agreement: the expected verdicts, so that "both fail" cannot pass for everything.
        answered = shape.train != "unmapped"
        assert report.train_kind == ("chat" if shape.chat else "eval")
        assert checks["few-shot"].runs == answered
        assert checks["lora"].runs == answered
        assert checks["optimized-prompt"].runs == (answered and shape.n_train >= NEED_FOR_SEARCH)
        assert checks["rag-lora"].runs == (answered and shape.docs is not None)
        two_labels = shape.labels is not None and shape.n_train >= 2
        assert checks["head"].runs == (answered and two_labels)
        if not answered:
            assert "train.fields: {reference: COLUMN}" in str(checks["lora"].fix)
            assert shape.answer + "_x" in str(checks["lora"].fix)  # the unmapped column, named
            assert "reference" in str(checks["rag-lora"].reason) or not shape.docs


@settings(max_examples=25, deadline=None)
@given(shape=shapes().filter(lambda s: s.train == "mapped"))
def test_mapped_columns_reach_every_rung_as_the_eval_set_reads_them(shape: Shape) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        task = build_task(Path(tmp), shape)
        data = load_training(task)
        assert len(data.examples) == shape.n_train
        for i, ex in enumerate(data.examples):
            assert ex.text == f"Q: train question {i}?"  # the task's template, on the mapped input column
            expected = _answer(shape, i)
            assert ex.reference == (str(expected) if isinstance(expected, int) else expected)
        if shape.docs is not None:
            queries = raft_queries(data.examples, data.path)
            assert [q.question for q in queries] == [f"train question {i}?" for i in range(shape.n_train)]
            with_ids = shape.docs == "ids" and shape.container in ("jsonl", "parquet")
            assert all(bool(q.doc_ids) == with_ids for q in queries)


def test_chat_training_files_give_question_and_answer(tmp_path: Path) -> None:
    shape = Shape("q", "a", "jsonl", "str", None, "sharegpt", "plain", 3)
    data = load_training(build_task(tmp_path, shape))
    assert data.kind == "chat" and data.format == "sharegpt"
    first = data.examples[0]
    assert (first.text, first.reference) == ("train question 0?", ["answer number 0"])
    assert [q.answers for q in raft_queries(data.examples, data.path)][1] == ["answer number 1"]


def test_the_issue_15_task_runs_every_rung(tmp_path: Path) -> None:
    """Papers as documents, question/answer columns with list answers, rougeL: the training rungs read train.jsonl
    through `fields` as the prompt rungs do (before, LoRA could not tell the format, RAFT found no gold)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "paper.txt").write_text("Attention relates every token to every other token. " * 50)
    rows = [{"question": f"What does section {i} show?", "answer": [f"attention relates token {i}"]} for i in range(6)]
    for name in ("train", "eval"):
        _write(tmp_path / name, rows, "jsonl")
    fields = "{input: question, reference: answer}"
    (tmp_path / "task.yaml").write_text(
        f"name: papers\neval: {{path: eval.jsonl, fields: {fields}}}\ntrain: {{path: train.jsonl, fields: {fields}}}\n"
        "documents: {path: docs}\nmetrics: [rougeL]\ngeneration: {max_new_tokens: 160}\n"
        "ladder: {optimize: {pool_size: 2, dev_size: 2}}\n"
    )
    checks = {c.name: c for c in check_rungs(Task.load(tmp_path / "task.yaml"))}
    for name in ("zero-shot", "few-shot", "optimized-prompt", "rag", "rag-few-shot", "lora", "rag-lora"):
        assert checks[name].runs, checks[name]
    assert checks["rag-lora"].rows == 6 and checks["lora"].rows == 6


def test_every_registered_rung_is_checked() -> None:
    """A rung registered later (DPO, distillation, tools) is checked too: check_rungs walks the registry."""
    assert set(TRAINING_RUNGS) <= set(RUNGS)


def test_tailor_train_reads_a_task_as_the_ladders_lora_rung_does(tmp_path: Path) -> None:
    """`tailor train sft --train-from task.yaml` trains on the rows the LoRA rung builds: one reader, one row shape."""
    from tailorlm.ladder.training_data import write_sft_data

    shape = Shape("Frage", "Antwort", "csv", "str", None, "mapped", None, 4)
    task = build_task(tmp_path, shape)
    written = write_sft_data(task, tmp_path / "out" / "sft.jsonl")
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert rows == Lora().training_records(_context(task, tmp_path))
    assert rows[0]["messages"] == [
        {"role": "user", "content": "Q: train question 0?"},
        {"role": "assistant", "content": "answer number 0"},
    ]
