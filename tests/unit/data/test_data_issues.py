"""Malformed inputs: every problem is reported, each with its exact ``file:line: field: message``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tailorlm.data import Issue, load_dataset
from tailorlm.data.issues import IssueLog, format_loc
from tailorlm.errors import DataError

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"
GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_jsonl(path: Path, rows: list[object]) -> Path:
    """Rows that are ``bytes`` or ``str`` are written verbatim, anything else as JSON."""
    with path.open("wb") as f:
        for row in rows:
            raw = row if isinstance(row, bytes) else (row if isinstance(row, str) else json.dumps(row)).encode()
            f.write(raw + b"\n")
    return path


def issues(path: Path, **kwargs: object) -> list[Issue]:
    with pytest.raises(DataError) as err:
        load_dataset(path, **kwargs)  # type: ignore[arg-type]
    return err.value.issues


def where(found: list[Issue]) -> list[tuple[int, str]]:
    return [(i.line, i.field) for i in found]


def test_issue_prints_as_file_line_field_message() -> None:
    issue = Issue("train.jsonl", 3, "messages[2].role", "got 'bot'")
    assert str(issue) == "train.jsonl:3: messages[2].role: got 'bot'"


def test_format_loc_makes_dotted_paths_and_drops_union_tags() -> None:
    assert format_loc(("messages", 2, "role")) == "messages[2].role"
    assert format_loc(("prompt", "list", 0, "content")) == "prompt[0].content"
    assert format_loc(()) == "(record)"


def test_issue_log_caps_stored_issues_but_counts_all() -> None:
    log = IssueLog(max_issues=2)
    for line in range(1, 6):
        log.add("f", line, "x", "bad")
    assert log.count == 5 and len(log.issues) == 2


def test_bad_json_reports_its_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, '{"messages": [', GOOD])
    [issue] = issues(path)
    assert (issue.path, issue.line, issue.field) == (str(path), 3, "(record)")
    assert str(issue).startswith(f"{path}:3: (record): invalid JSON")


def test_non_utf8_bytes_report_their_line(tmp_path: Path) -> None:
    bad = json.dumps(GOOD).encode().replace(b"hello", b"hel\xfflo")
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, bad, GOOD])
    [issue] = issues(path)
    assert (issue.line, issue.field) == (2, "(encoding)")
    assert "not valid UTF-8: byte 0xff" in issue.message


def test_wrong_role_reports_the_message_index(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, GOOD, bad])
    [issue] = issues(path)
    assert str(issue) == f"{path}:4: messages[1].role: got 'bot', expected 'system', 'user', 'assistant' or 'tool'"


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    found = issues(FIXTURES / "bad_chat.jsonl")
    assert where(found) == [(2, "weight"), (3, "(record)"), (4, "messages[1].role"), (5, "messages")]
    assert found[3].message.startswith("no assistant turn")
    assert str(found[0]).startswith(f"{FIXTURES / 'bad_chat.jsonl'}:2: weight: unknown field")


def test_every_problem_of_one_record_is_reported(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": 5, "extra": 1}]}
    path = write_jsonl(tmp_path / "d.jsonl", [bad])
    assert sorted(where(issues(path))) == [
        (1, "messages[0].content"),
        (1, "messages[1].content"),
        (1, "messages[1].extra"),
    ]


def test_missing_field_and_wrong_type(tmp_path: Path) -> None:
    rows = [{"text": "ok", "label": 1}, {"text": "no label"}, {"text": ["a"], "label": 1.5}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    found = issues(path, format="classification")
    assert [str(i).removeprefix(f"{path}:") for i in found] == [
        "2: label: missing required field",
        "3: text: Input should be a valid string, got a list",
        "3: label: Input should be a string or an integer, got a float",
    ]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n \n")
    [issue] = issues(path)
    assert str(issue) == f"{path}:0: (file): file is empty"


def test_header_only_csv_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\n")
    [issue] = issues(path, format="classification")
    assert (issue.line, issue.message) == (0, "no records (only a header row)")


def test_oversized_record_is_an_issue_not_a_crash(tmp_path: Path) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 500}, {"role": "assistant", "content": "y"}]}
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, big])
    [issue] = issues(path, max_record_bytes=200)
    assert (issue.line, issue.field) == (2, "(record)")
    assert "over the limit of 200" in issue.message


def test_csv_wrong_column_count_reports_the_physical_line(tmp_path: Path) -> None:
    # Row 1 spans lines 2-3 (a quoted newline), so the bad row is on physical line 5, not "row 3".
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",pos\nok,neg\ntoo,many,cells\nfine,pos\n')
    [issue] = issues(path)
    assert str(issue) == f"{path}:5: (record): expected 2 columns (text, label), found 3"


def test_csv_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\ngood,pos\nb\xe9d,neg\n")
    [issue] = issues(path)
    assert (issue.line, issue.field) == (3, "(encoding)")


def test_json_list_reports_the_line_where_each_object_starts(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(
        "[\n"
        '  {"instruction": "a", "output": "b"},\n'  # line 2
        "  {\n"  # line 3: the object starts here
        '    "instruction": "c",\n'
        '    "output": ""\n'
        "  },\n"
        '  {"instruction": "e", "output": "f", "oops": 1}\n'  # line 7
        "]\n"
    )
    assert where(issues(path)) == [(3, "output"), (7, "oops")]


def test_json_list_recovers_after_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(
        '[\n  {"instruction": "a", "output": "b",},\n  {"instruction": "c", "output": 5}\n]\n'  # trailing comma
    )
    assert where(issues(path, format="alpaca")) == [(2, "(record)"), (3, "output")]


def test_json_single_object_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"version": 1, "data": []}')
    [issue] = issues(path)
    assert "got one object (keys: version, data)" in issue.message


def test_non_object_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, [1, 2]])
    [issue] = issues(path)
    assert (issue.line, issue.message) == (2, "expected a JSON object, got list")


def test_gzip_jsonl_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n{"text": ""}\n'))
    [issue] = issues(path)
    assert str(issue) == f"{path}:2: text: empty text"


def test_strict_false_returns_valid_records_and_issues() -> None:
    ds = load_dataset(FIXTURES / "bad_chat.jsonl", strict=False)
    assert len(ds) == 1 and ds.issue_count == 4 and len(ds.issues) == 4


def test_error_counts_all_issues_but_stores_a_capped_list(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD] + ["{bad"] * 30)
    with pytest.raises(DataError) as err:
        load_dataset(path, max_issues=10)
    assert len(err.value.issues) == 10
    assert "30 problem(s)" in err.value.message and "the first 10 are listed" in err.value.message


def test_unknown_field_error_hints_at_extra_ignore() -> None:
    with pytest.raises(DataError) as err:
        load_dataset(FIXTURES / "bad_chat.jsonl")
    assert err.value.hint is not None and "extra" in err.value.hint
