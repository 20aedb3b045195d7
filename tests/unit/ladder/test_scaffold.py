"""`tailor init` as a library: finding files, mapping columns, choosing metrics, the commented YAML, the write."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tailorlm.core.config import parse_yaml
from tailorlm.core.task import Task
from tailorlm.errors import ConfigError, DataError
from tailorlm.ladder.scaffold import (
    choose_metrics,
    draft_task,
    find_inputs,
    guess_fields,
    read_columns,
    render_task_yaml,
    rung_plan,
    scaffold,
    task_from_text,
)

pytestmark = pytest.mark.unit


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _qa(n: int, prefix: str = "q") -> list[dict[str, Any]]:
    return [{"question": f"{prefix} {i}?", "answer": f"answer {i}"} for i in range(n)]


# --- finding files -------------------------------------------------------------------------------------------------


def test_find_inputs_by_common_names(tmp_path: Path) -> None:
    _jsonl(tmp_path / "test.jsonl", _qa(2))
    (tmp_path / "knowledge").mkdir()
    _jsonl(tmp_path / "train.jsonl", _qa(2))
    _jsonl(tmp_path / "prefs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    inputs = find_inputs(tmp_path)
    assert inputs.eval == tmp_path / "test.jsonl"
    assert inputs.documents == tmp_path / "knowledge"
    assert inputs.train == tmp_path / "train.jsonl" and inputs.preference == tmp_path / "prefs.jsonl"
    assert inputs.needs() == {"documents", "train", "preference"}
    assert sorted(inputs.detected) == ["documents", "eval", "preference", "train"]


def test_eval_json_wins_over_test_and_options_win_over_names(tmp_path: Path) -> None:
    _jsonl(tmp_path / "test.jsonl", _qa(2))
    _jsonl(tmp_path / "eval.json", _qa(2))
    assert find_inputs(tmp_path).eval == tmp_path / "eval.json"
    other = _jsonl(tmp_path / "elsewhere" / "mine.jsonl", _qa(2))
    inputs = find_inputs(tmp_path, eval=other)
    assert inputs.eval == other and inputs.detected == []


def test_find_inputs_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no eval file in") as exc:
        find_inputs(tmp_path)
    assert "--eval" in (exc.value.hint or "")
    with pytest.raises(DataError, match="does not exist"):
        find_inputs(tmp_path / "new")
    with pytest.raises(DataError, match=r"--train .*: no such file"):
        find_inputs(tmp_path, eval=_jsonl(tmp_path / "e.jsonl", _qa(1)), train=tmp_path / "nope.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        find_inputs(tmp_path, eval=tmp_path / "folder")
    with pytest.raises(DataError, match="is a file"):
        find_inputs(tmp_path / "e.jsonl")


# --- columns -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["question", "answer", "id"], {"input": "question", "reference": "answer"}),
        (["Prompt", "Output"], {"input": "Prompt", "reference": "Output"}),
        (["text", "label"], {"input": "text", "reference": "label"}),
        (["query", "answers", "passage"], {"input": "query", "reference": "answers", "context": "passage"}),
        (["input", "reference"], {"input": "input", "reference": "reference"}),
        (["foo", "bar"], {}),
    ],
)
def test_guess_fields(columns: list[str], expected: dict[str, str]) -> None:
    assert guess_fields(columns) == expected


def test_read_columns_from_jsonl_and_csv(tmp_path: Path) -> None:
    _jsonl(tmp_path / "e.jsonl", [{"q": 1}, {"q": 2, "extra": 3}])
    assert read_columns(tmp_path / "e.jsonl") == ["q", "extra"]
    (tmp_path / "e.csv").write_text("Question,Answer\nx,y\n")
    assert read_columns(tmp_path / "e.csv") == ["Question", "Answer"]
    (tmp_path / "e.txt").write_text("plain")
    assert read_columns(tmp_path / "e.txt") == []


# --- metrics -------------------------------------------------------------------------------------------------------


def test_labels_choose_accuracy() -> None:
    choice = choose_metrics(["positive", "negative", "Positive", "negative", "positive"])
    assert (choice.kind, choice.metrics, choice.primary) == ("label", ["accuracy"], None)
    assert choice.labels == ["negative", "positive"] and choice.stop == ["\n"]
    assert choice.max_new_tokens == 16


def test_distinct_short_answers_are_not_labels() -> None:
    # Repeats happen in QA ("four" twice): labels need each value to come back, on average.
    choice = choose_metrics(["Rollo", "four", "four", "William", "Drogo", "1066"])
    assert (choice.kind, choice.metrics, choice.primary) == ("short", ["exact_match", "f1"], "f1")
    assert choice.max_new_tokens == 16 and choice.stop == ["\n"]


def test_numbers_choose_numeric_match() -> None:
    assert choose_metrics(["42", "1,234", "-3.5", "$7", "3/4"]).metrics == ["numeric_match"]
    gsm = ["She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "So 10 in all.\n#### 10"] * 3
    choice = choose_metrics(gsm)
    assert choice.kind == "number" and choice.stop == []


def test_long_answers_choose_rouge_and_a_bigger_budget() -> None:
    long = " ".join(["word"] * 60)
    choice = choose_metrics([long + f" {i}" for i in range(5)])
    assert (choice.kind, choice.metrics) == ("long", ["rougeL"])
    assert choice.max_new_tokens > 100 and choice.max_new_tokens % 16 == 0 and choice.stop == []


def test_list_references_use_the_longest_alternative_for_the_budget() -> None:
    short = choose_metrics([["a"], ["b"], ["c"]])
    longer = choose_metrics([["a", "x" * 200], ["b"], ["c"]])
    assert short.kind == "short" and longer.max_new_tokens > short.max_new_tokens


def test_no_references_is_an_error() -> None:
    with pytest.raises(DataError, match="no reference answers"):
        choose_metrics([None, [], " "])


# --- draft and YAML ------------------------------------------------------------------------------------------------


def _keys_without_comment(text: str) -> list[str]:
    """Written (uncommented) key lines that have no `# comment` (template body lines are not keys)."""
    bad, in_block = [], False
    for line in text.splitlines():
        if in_block and (line.startswith("  ") or not line):
            continue
        in_block = False
        if not line or line.lstrip().startswith("#"):
            continue
        if re.match(r"^\s*[\w]+:", line) and "  # " not in line:
            bad.append(line)
        in_block = line.split("#")[0].rstrip().endswith("|-")
    return bad


def test_yaml_for_a_full_folder_is_commented_valid_and_relative(tmp_path: Path) -> None:
    _jsonl(tmp_path / "eval.jsonl", _qa(4))
    _jsonl(tmp_path / "train.jsonl", _qa(4, "t"))
    (tmp_path / "docs").mkdir()
    _jsonl(tmp_path / "preference.jsonl", [{"question": "p", "chosen": "c", "rejected": "r"}])
    draft = draft_task(find_inputs(tmp_path), name="my task")
    text = render_task_yaml(draft)
    assert _keys_without_comment(text) == []
    data = parse_yaml(text)
    assert data["name"] == "my task"
    assert data["eval"] == {"path": "eval.jsonl", "fields": {"input": "question", "reference": "answer"}}
    assert data["train"] == {"path": "train.jsonl", "fields": {"input": "question", "reference": "answer"}}
    assert data["documents"] == {"path": "docs", "include": ["**/*"], "exclude": []}
    assert data["preference"] == {"path": "preference.jsonl", "fields": {"prompt": "question"}}
    assert data["metrics"] == ["exact_match", "f1"] and data["primary_metric"] == "f1"
    assert data["generation"] == {"max_new_tokens": 16, "stop": ["\n"]}
    assert data["input_template"] == "Answer with a short phrase.\n\n{{ input }}"
    # The optional blocks are there, commented out, and parse once uncommented.
    for block in ("# canaries:", "# budgets:", "#   latency_p50_s:", "# bootstrap:", "# description:"):
        assert block in text
    assert "ladder:" not in text
    task = task_from_text(text, tmp_path / "task.yaml")
    assert task.resolve(task.eval.path) == tmp_path / "eval.jsonl"


def test_paths_outside_the_folder_are_absolute(tmp_path: Path) -> None:
    outside = _jsonl(tmp_path / "data" / "eval.jsonl", _qa(3))
    draft = draft_task(find_inputs(tmp_path / "task", eval=outside))
    assert parse_yaml(render_task_yaml(draft))["eval"]["path"] == str(outside)
    assert draft.name == "task"


def test_context_column_goes_into_the_template(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}", "passage": f"p{i}"} for i in range(3)]
    _jsonl(tmp_path / "eval.jsonl", rows)
    draft = draft_task(find_inputs(tmp_path))
    assert draft.eval_fields == {"input": "question", "reference": "answer", "context": "passage"}
    assert draft.input_template == "Answer with a short phrase.\n\n{{ context }}\n\n{{ input }}"


def test_labels_are_listed_in_the_template_and_a_category_column_is_used(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": "yes" if i % 2 else "no", "topic": "ab"[i % 2]} for i in range(8)]
    _jsonl(tmp_path / "eval.jsonl", rows)
    draft = draft_task(find_inputs(tmp_path))
    assert draft.input_template == "{{ input }}\n\nAnswer with one of: no, yes."
    assert draft.category_field == "topic" and draft.category_values == 2
    data = parse_yaml(render_task_yaml(draft))
    assert data["metrics"] == ["accuracy"] and "primary_metric" not in data and data["category_field"] == "topic"


def test_explicit_fields_override_the_guess_and_unmappable_columns_are_an_error(tmp_path: Path) -> None:
    _jsonl(tmp_path / "eval.jsonl", [{"q": "x?", "a": "y"}] * 2)
    with pytest.raises(DataError, match="cannot tell which column holds the input: columns q, a") as exc:
        draft_task(find_inputs(tmp_path))
    assert "--field input=COLUMN" in (exc.value.hint or "")
    draft = draft_task(find_inputs(tmp_path), fields={"input": "q", "reference": "a"})
    assert draft.eval_fields == {"input": "q", "reference": "a"}


def test_odd_strings_are_quoted(tmp_path: Path) -> None:
    folder = tmp_path / "my task"
    _jsonl(folder / "eval.jsonl", _qa(2))
    text = render_task_yaml(draft_task(find_inputs(folder), name="yes: no"))
    assert parse_yaml(text)["name"] == "yes: no"


# --- scaffold --------------------------------------------------------------------------------------------------------


def test_scaffold_writes_validates_and_plans(tmp_path: Path) -> None:
    _jsonl(tmp_path / "eval.jsonl", _qa(5))
    result = scaffold(tmp_path)
    assert result.task_file == tmp_path / "task.yaml" and result.task_file.read_text() == result.text
    assert Task.load(result.task_file).metrics == ["exact_match", "f1"]
    assert result.report.eval_n == 5 and any("only 5 eval examples" in n for n in result.notes)
    plan = {r.name: r.applies for r in result.rungs}
    assert plan["zero-shot"] and not plan["few-shot"] and not plan["rag"] and not plan["chain-of-thought"]
    assert result.next_command(tmp_path) == f"tailor ladder {tmp_path / 'task.yaml'} --plan"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic write leaves nothing


def test_scaffold_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    _jsonl(tmp_path / "eval.jsonl", _qa(5))
    (tmp_path / "task.yaml").write_text("mine\n")
    with pytest.raises(ConfigError, match="already exists") as exc:
        scaffold(tmp_path)
    assert "--force" in (exc.value.hint or "") and (tmp_path / "task.yaml").read_text() == "mine\n"
    scaffold(tmp_path, force=True)
    assert (tmp_path / "task.yaml").read_text().startswith("# What")


def test_scaffold_writes_nothing_when_preflight_fails(tmp_path: Path) -> None:
    _jsonl(tmp_path / "eval.jsonl", _qa(5))
    (tmp_path / "docs").mkdir()
    with pytest.raises(DataError, match=r"documents\.path") as exc:
        scaffold(tmp_path)
    assert "nothing was written" in (exc.value.hint or "")
    assert not (tmp_path / "task.yaml").exists()


def test_rungs_follow_the_data(tmp_path: Path) -> None:
    _jsonl(tmp_path / "eval.jsonl", [{"question": f"{i}+1?", "answer": str(i + 1)} for i in range(6)])
    _jsonl(tmp_path / "train.jsonl", [{"question": f"{i}+2?", "answer": str(i + 2)} for i in range(6)])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Sums\nOne plus one is two.")
    result = scaffold(tmp_path)
    assert result.task.metrics == ["numeric_match"]
    assert (result.report.train_n, result.report.documents_n) == (6, 1)
    # every rung but the classification head (a numeric task has no label metric) and the optimized prompt (its
    # search needs more training records than 6: the preflight built its data and said so, with the fix)
    runs = {r.name: r for r in result.rungs}
    unfit = ("head", "optimized-prompt", "constrained-labels", "tools-constrained", "tools-lora", "dpo")
    assert all(r.applies for r in result.rungs if r.name not in unfit), runs
    assert not runs["dpo"].applies and "preference" in str(runs["dpo"].reason)  # no preference pairs
    assert not runs["head"].applies and not runs["constrained-labels"].applies  # no label metric
    assert not runs["tools-constrained"].applies and not runs["tools-lora"].applies  # not scored on tool calls
    assert not runs["optimized-prompt"].applies and "needs at least 81" in str(runs["optimized-prompt"].reason)
    assert "pool_size" in str(runs["optimized-prompt"].fix)
    assert [r.name for r in rung_plan(result.task)] == [r.name for r in result.rungs]
