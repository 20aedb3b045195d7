"""Preflight: every data file a ladder reads is checked before a model loads; errors name file:line: field and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tailorlm.core.task import Task
from tailorlm.errors import ConfigError, DataError
from tailorlm.ladder.preflight import SMALL_EVAL, PreflightReport, check_rungs, preflight

pytestmark = pytest.mark.unit


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _qa(n: int, prefix: str = "q") -> list[dict[str, Any]]:
    return [{"question": f"{prefix} {i}?", "answer": f"a{i}"} for i in range(n)]


def _task(tmp_path: Path, body: str, eval_rows: list[Any] | None = None) -> Task:
    if eval_rows is not None:
        _jsonl(tmp_path / "eval.jsonl", eval_rows)
    (tmp_path / "task.yaml").write_text(body)
    return Task.load(tmp_path / "task.yaml")


EVAL = "name: t\neval: {path: eval.jsonl, fields: {input: question, reference: answer}}\n"


def _error(exc: pytest.ExceptionInfo[Exception]) -> str:
    return str(exc.value)


# --- eval --------------------------------------------------------------------------------------------------------


def test_good_eval_counts_and_notes_a_small_set(tmp_path: Path) -> None:
    report = preflight(_task(tmp_path, EVAL, _qa(12)), set())
    assert isinstance(report, PreflightReport)
    assert (report.eval_n, report.eval_records) == (12, 12)
    assert report.train_n is None and report.documents_n is None and report.preference_n is None
    assert report.task_file == str(tmp_path / "task.yaml")
    assert any("only 12 eval examples" in n and "confidence intervals" in n for n in report.notes)
    assert report.counts() == {"eval": 12, "train": None, "documents": None}


def test_large_eval_has_no_small_set_note_and_limit_counts(tmp_path: Path) -> None:
    task = _task(tmp_path, EVAL.replace("answer}}", "answer}, limit: 60}"), _qa(SMALL_EVAL + 20))
    report = preflight(task, set())
    assert report.eval_n == 60 and report.eval_records == SMALL_EVAL + 20
    assert not any("confidence" in n for n in report.notes)


def test_malformed_json_line_names_file_line_and_task_key(tmp_path: Path) -> None:
    rows: list[Any] = [*_qa(2), '{"question": "x" "answer": "y"}']
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, EVAL, rows), set())
    message = _error(exc)
    assert f"{tmp_path / 'task.yaml'}: eval.path:" in message
    assert f"{tmp_path / 'eval.jsonl'}:3: (record): invalid JSON" in message
    assert exc.value.__cause__ is not None and exc.value.__cause__.issues  # type: ignore[attr-defined]


def test_record_missing_input_names_the_users_column(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, EVAL, [*_qa(1), {"answer": "z"}]), set())
    assert f"{tmp_path / 'eval.jsonl'}:2: question: missing required field" in _error(exc)


def test_record_missing_reference_names_line_and_field(tmp_path: Path) -> None:
    rows = [*_qa(1), {"question": "b?"}, "", {"question": "c?", "answer": " "}, {"question": "d?", "answer": []}]
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, EVAL, rows), set())
    message = _error(exc)
    assert "3 record(s) lack the reference that exact_match, f1 need" in message
    path = tmp_path / "eval.jsonl"
    # Line numbers are the file's, blank line included.
    assert f"{path}:2: answer: missing reference" in message
    assert f"{path}:4: answer: empty reference" in message
    assert f"{path}:5: answer: no non-empty reference" in message
    assert "eval.fields" in (exc.value.hint or "")


def test_missing_reference_is_fine_for_metrics_that_need_none(tmp_path: Path) -> None:
    body = "name: t\neval: {path: eval.jsonl, fields: {input: question}}\nmetrics: [json_valid]\n"
    assert preflight(_task(tmp_path, body, [{"question": "give JSON"}]), set()).eval_n == 1


def test_csv_missing_reference_cell_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "eval.csv").write_text("question,answer\na?,x\n\nb?,\n")
    body = "name: t\neval: {path: eval.csv, fields: {input: question, reference: answer}}\n"
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, body), set())
    assert f"{tmp_path / 'eval.csv'}:4: answer: missing reference" in _error(exc)


def test_missing_eval_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, EVAL), set())
    assert f"{tmp_path / 'task.yaml'}: eval.path: {tmp_path / 'eval.jsonl'}: no such file" in _error(exc)


def test_eval_path_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "eval.jsonl").mkdir()
    with pytest.raises(DataError, match="is a folder; expected a file"):
        preflight(_task(tmp_path, EVAL), set())


def test_empty_eval_file(tmp_path: Path) -> None:
    (tmp_path / "eval.jsonl").write_text("\n")
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, EVAL), set())
    assert "eval.path" in _error(exc) and "file is empty" in _error(exc)


def test_input_template_error_names_the_task_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        preflight(_task(tmp_path, EVAL + "input_template: '{{ nope }}'\n", _qa(2)), set())
    assert "input_template:" in _error(exc) and "nope" in _error(exc)


def test_duplicates_and_missing_category_are_notes(tmp_path: Path) -> None:
    report = preflight(_task(tmp_path, EVAL + "category_field: topic\n", [*_qa(3), *_qa(1)]), set())
    assert any("1 eval input(s) appear more than once" in n for n in report.notes)
    assert any("category_field 'topic'" in n for n in report.notes)


def test_unknown_needs_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown needs"):
        preflight(_task(tmp_path, EVAL, _qa(2)), {"docs"})


# --- documents ---------------------------------------------------------------------------------------------------


DOCS = EVAL + "documents: {path: docs}\n"


def test_documents_count_files_and_records(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("# A\nalpha")
    _jsonl(tmp_path / "docs" / "sub" / "p.jsonl", [{"id": 1, "text": "one"}, {"id": 2, "text": "two"}])
    report = preflight(_task(tmp_path, DOCS, _qa(2)), {"documents"})
    assert (report.documents_n, report.documents_records) == (2, 3)
    assert report.documents_path == str(tmp_path / "docs")


def test_empty_documents_folder_names_folder_key_and_task_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, DOCS, _qa(2)), {"documents"})
    message = _error(exc)
    assert f"{tmp_path / 'task.yaml'}: documents.path: {tmp_path / 'docs'} (a folder) holds no readable document" in (
        message
    )


def test_documents_all_excluded_says_which_globs(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("alpha")
    task = _task(tmp_path, EVAL + "documents: {path: docs, exclude: ['*.md']}\n", _qa(2))
    with pytest.raises(DataError) as exc:
        preflight(task, {"documents"})
    assert "holds no readable document" in _error(exc) and "['*.md']" in (exc.value.hint or "")


def test_documents_only_unreadable_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "empty.txt").write_text("")
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, DOCS, _qa(2)), {"documents"})
    assert "1 could not be read" in _error(exc) and "empty.txt" in _error(exc)


def test_documents_some_unreadable_is_a_note(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "good.txt").write_text("hello")
    (tmp_path / "docs" / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    report = preflight(_task(tmp_path, DOCS, _qa(2)), {"documents"})
    assert report.documents_n == 1
    assert any("cannot be read" in n and "bad.txt" in n for n in report.notes)


def test_documents_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"documents\.path: .*docs: no such file or folder"):
        preflight(_task(tmp_path, DOCS, _qa(2)), {"documents"})


def test_documents_not_checked_unless_needed(tmp_path: Path) -> None:
    assert preflight(_task(tmp_path, DOCS, _qa(2)), set()).documents_n is None


def test_needs_a_block_the_task_lacks(tmp_path: Path) -> None:
    task = _task(tmp_path, EVAL, _qa(2))
    for need, key in (("documents", "documents"), ("train", "train"), ("preference", "preference")):
        with pytest.raises(ConfigError, match=f"no `{key}:` block"):
            preflight(task, {need})


# --- train -------------------------------------------------------------------------------------------------------


TRAIN = EVAL + "train: {path: train.jsonl, fields: {input: question, reference: answer}}\n"


def test_eval_style_train_with_extra_columns(tmp_path: Path) -> None:
    rows = [{**r, "id": i, "doc_ids": ["d#1"]} for i, r in enumerate(_qa(30, "t"))]
    _jsonl(tmp_path / "train.jsonl", rows)
    report = preflight(_task(tmp_path, TRAIN, _qa(2)), {"train"})
    assert (report.train_n, report.train_kind) == (30, "eval")
    assert not any("training" in n for n in report.notes)


def test_train_leak_of_eval_inputs_is_a_note(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [*_qa(3), *_qa(30, "t")])
    report = preflight(_task(tmp_path, TRAIN, _qa(5)), {"train"})
    assert any("3 eval input(s) also appear in the training data" in n for n in report.notes)


def test_chat_and_alpaca_train_load_as_chat(tmp_path: Path) -> None:
    body = EVAL + "train: {path: train.jsonl}\n"
    chat = {"messages": [{"role": "user", "content": "q 0?"}, {"role": "assistant", "content": "a"}]}
    _jsonl(tmp_path / "train.jsonl", [chat])
    report = preflight(_task(tmp_path, body, _qa(2)), {"train"})
    assert (report.train_n, report.train_kind) == (1, "chat")
    assert any("openai chat records" in n for n in report.notes)
    assert any("1 eval input(s) also appear" in n for n in report.notes)
    # Alpaca has an `input` key too: it must not be read as eval records with everything else hidden in metadata.
    _jsonl(tmp_path / "train.jsonl", [{"instruction": "Say hi", "input": "", "output": "hi"}])
    report = preflight(Task.load(tmp_path / "task.yaml"), {"train"})
    assert report.train_kind == "chat" and any("alpaca" in n for n in report.notes)


def test_train_bad_records_name_file_line_field(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [*_qa(1), {"answer": "x"}])
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, TRAIN, _qa(2)), {"train"})
    assert "train.path" in _error(exc) and f"{tmp_path / 'train.jsonl'}:2: question: missing" in _error(exc)
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}
    _jsonl(tmp_path / "train.jsonl", [chat])
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, EVAL + "train: {path: train.jsonl}\n"), {"train"})
    assert f"{tmp_path / 'train.jsonl'}:1: messages[1].role" in _error(exc)


def test_train_missing_reference_is_a_note_and_rungs_that_need_answers_cannot_run(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [*_qa(1), {"question": "no answer"}])
    report = preflight(_task(tmp_path, TRAIN, _qa(2)), {"train"})
    assert any(f"{tmp_path / 'train.jsonl'}:2: answer: missing reference" in n for n in report.notes)
    assert all(c.runs for c in check_rungs(Task.load(tmp_path / "task.yaml"), ["few-shot", "lora"]))
    # No record has an answer: the training rungs say they cannot run, why, and the column to map.
    _jsonl(tmp_path / "train.jsonl", [{"question": "no answer"}, {"question": "none either"}])
    checks = {c.name: c for c in check_rungs(Task.load(tmp_path / "task.yaml"), ["zero-shot", "few-shot", "lora"])}
    assert checks["zero-shot"].runs and not checks["few-shot"].runs and not checks["lora"].runs
    assert "has a reference" in str(checks["lora"].reason) and "train.fields: {reference: COLUMN}" in str(
        checks["lora"].fix
    )


def test_train_of_another_kind_is_refused(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "pos"}])
    with pytest.raises(DataError, match="holds classification records"):
        preflight(_task(tmp_path, EVAL + "train: {path: train.jsonl}\n", _qa(2)), {"train"})
    _jsonl(tmp_path / "train.jsonl", [{"foo": 1}])
    with pytest.raises(DataError, match="cannot tell the format"):
        preflight(Task.load(tmp_path / "task.yaml"), {"train"})


def test_train_missing_or_folder(tmp_path: Path) -> None:
    task = _task(tmp_path, TRAIN, _qa(2))
    with pytest.raises(DataError, match=r"train\.path: .*train\.jsonl: no such file"):
        preflight(task, {"train"})
    (tmp_path / "train.jsonl").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        preflight(task, {"train"})


# --- preference --------------------------------------------------------------------------------------------------


PREF = EVAL + "preference: {path: prefs.jsonl}\n"


def test_preference_pairs(tmp_path: Path) -> None:
    _jsonl(tmp_path / "prefs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 3)
    report = preflight(_task(tmp_path, PREF, _qa(2)), {"preference"})
    assert report.preference_n == 3 and any("3 preference pair(s)" in n for n in report.notes)


def test_preference_missing_field(tmp_path: Path) -> None:
    _jsonl(tmp_path / "prefs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "c"}])
    with pytest.raises(DataError) as exc:
        preflight(_task(tmp_path, PREF, _qa(2)), {"preference"})
    assert "preference.path" in _error(exc) and f"{tmp_path / 'prefs.jsonl'}:2: rejected: missing" in _error(exc)


# --- unknown keys in task.yaml (rejected by Task.load itself) ------------------------------------------------------


def test_unknown_top_level_key_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(EVAL + "metrcs: [f1]\n")
    with pytest.raises(ConfigError) as exc:
        Task.load(tmp_path / "task.yaml")
    assert f"{tmp_path / 'task.yaml'}: metrcs: unknown key; did you mean 'metrics'?" in _error(exc)


def test_unknown_nested_key_names_file_and_dotted_key(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(EVAL + "generation: {max_new_token: 8}\ndocuments: {path: d, exlude: []}\n")
    with pytest.raises(ConfigError) as exc:
        Task.load(tmp_path / "task.yaml")
    message = _error(exc)
    assert (
        f"{tmp_path / 'task.yaml'}: generation.max_new_token: unknown key; did you mean 'max_new_tokens'?" in message
    )
    assert f"{tmp_path / 'task.yaml'}: documents.exlude: unknown key; did you mean 'exclude'?" in message
