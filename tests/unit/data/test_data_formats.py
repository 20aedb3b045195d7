"""Every loader on small data, format detection, the override, and the canonical records they produce."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tailorlm.data import FORMAT_NAMES, ChatRecord, detect_format, load_dataset
from tailorlm.errors import DataError

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat(record: ChatRecord) -> list[tuple[str, str | None]]:
    return [(m.role, m.content) for m in record.messages]


def test_openai_jsonl() -> None:
    ds = load_dataset(FIXTURES / "chat.jsonl")
    assert (ds.format, ds.kind, len(ds)) == ("openai", "chat", 2)
    assert chat(ds[0]) == [("system", "You are terse."), ("user", "What is 2+2?"), ("assistant", "4")]


def test_openai_tool_calls_and_tools(tmp_path: Path) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
    row = {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "4", "tool_call_id": "c1", "name": "add"},
            {"role": "assistant", "content": "4"},
        ],
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
    }
    ds = load_dataset(jsonl(tmp_path / "d.jsonl", [row]))
    assert ds[0].messages[1].tool_calls == [call] and ds[0].tools == row["tools"]


def test_alpaca_json_list_becomes_chat() -> None:
    ds = load_dataset(FIXTURES / "alpaca.json")
    assert (ds.format, ds.kind) == ("alpaca", "chat")
    assert chat(ds[0]) == [("user", "Add the numbers.\n\n2 and 2"), ("assistant", "4")]
    assert chat(ds[1]) == [("user", "Name the capital of France."), ("assistant", "Paris.")]


def test_alpaca_jsonl_with_system_and_history(tmp_path: Path) -> None:
    row = {"instruction": "And 3+3?", "output": "6", "system": "Be brief.", "history": [["2+2?", "4"]]}
    ds = load_dataset(jsonl(tmp_path / "d.jsonl", [row]))
    assert chat(ds[0]) == [
        ("system", "Be brief."),
        ("user", "2+2?"),
        ("assistant", "4"),
        ("user", "And 3+3?"),
        ("assistant", "6"),
    ]


def test_sharegpt_becomes_chat_with_function_calls(tmp_path: Path) -> None:
    row = {
        "conversations": [
            {"from": "human", "value": "2+2?"},
            {"from": "function_call", "value": '{"name": "add", "arguments": {"a": 2, "b": 2}}'},
            {"from": "observation", "value": "4"},
            {"from": "gpt", "value": "4"},
        ]
    }
    ds = load_dataset(jsonl(tmp_path / "d.jsonl", [row]))
    assert ds.format == "sharegpt"
    assert [m.role for m in ds[0].messages] == ["user", "assistant", "tool", "assistant"]
    assert ds[0].messages[1].tool_calls == [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}
    ]


def test_sharegpt_bad_speaker_names_the_turn(tmp_path: Path) -> None:
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]}
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "d.jsonl", [row]))
    [issue] = err.value.issues
    assert (issue.line, issue.field) == (1, "conversations[1].from")
    assert issue.message.startswith("got 'bot', expected one of human, gpt")


def test_sharegpt_without_answer_reports_conversations(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "d.jsonl", [{"conversations": [{"from": "human", "value": "hi"}]}]))
    assert err.value.issues[0].field == "conversations"


def test_preference_strings_and_messages(tmp_path: Path) -> None:
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {
            "prompt": [{"role": "user", "content": "2+2?"}],
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
        },
    ]
    ds = load_dataset(jsonl(tmp_path / "d.jsonl", rows))
    assert (ds.format, ds.kind) == ("preference", "preference")
    assert ds[0].chosen == "4" and ds[1].rejected[0].content == "5"


def test_preference_bad_message_path(tmp_path: Path) -> None:
    row = {"prompt": "q", "chosen": [{"role": "assistant", "content": ""}], "rejected": 3}
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "d.jsonl", [row]))
    assert sorted(i.field for i in err.value.issues) == ["chosen[0].content", "rejected"]


def test_classification_csv_and_labels() -> None:
    ds = load_dataset(FIXTURES / "classification.csv")
    assert (ds.format, ds.kind, len(ds)) == ("classification", "classification", 3)
    assert ds[2].text == 'a "quoted" word' and ds.label_names == ["neg", "pos"]


def test_classification_named_columns_in_tsv_and_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text('sentence\tsentiment\nit\'s "fine"\t1\nbad\t0\n')
    ds = load_dataset(path, text_field="sentence", label_field="sentiment")
    assert ds[0].text == 'it\'s "fine"' and ds[0].label == 1 and ds.label_names == ["0", "1"]


def test_headerless_tsv_with_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("good film\t1\nbad film\t0\n")
    ds = load_dataset(path, columns=["text", "label"])
    assert len(ds) == 2 and ds.kind == "classification"


def test_eval_csv_empty_cells_are_absent() -> None:
    ds = load_dataset(FIXTURES / "eval.csv")
    assert (ds.format, ds.kind) == ("eval", "eval")
    assert (ds[0].reference, ds[0].context) == ("4", None) and ds[1].context == "France is in Europe."


def test_eval_jsonl_with_field_options_and_list_references(tmp_path: Path) -> None:
    rows = [{"question": "Who?", "answer": ["Ada", "Ada Lovelace"], "topic": "history"}]
    ds = load_dataset(
        jsonl(tmp_path / "d.jsonl", rows), input_field="question", reference_field="answer", extra="metadata"
    )
    assert ds[0].reference == ["Ada", "Ada Lovelace"] and ds[0].metadata == {"topic": "history"}


def test_field_options_report_problems_under_the_users_column(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "d.jsonl", [{"question": ""}]), input_field="question")
    assert err.value.issues[0].field == "question"


def test_parquet_rows_use_index_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    table = pa.table({"text": ["good", "", "bad"], "label": ["pos", "neg", "neg"]})
    pq.write_table(table, path)
    ds = load_dataset(path, strict=False)
    assert (ds.format, len(ds)) == ("classification", 2)
    assert [(i.line, i.field) for i in ds.issues] == [(2, "text")]


def test_parquet_chat(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert chat(load_dataset(path)[0]) == [("user", "hi"), ("assistant", "yo")]


def test_text_folder_one_record_per_file_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.md").write_text("# B\nsecond")
    (tmp_path / "docs" / "a.txt").write_text("first")
    (tmp_path / "docs" / "sub" / "c.txt").write_text("third")
    (tmp_path / "docs" / "skip.json").write_text("{}")
    ds = load_dataset(tmp_path / "docs")
    assert (ds.format, ds.kind) == ("text", "text")
    assert [r.text for r in ds] == ["first", "# B\nsecond", "third"]


def test_text_file_units(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("para one\nstill one\n\n\npara two\n")
    assert len(load_dataset(path)) == 1
    assert [r.text for r in load_dataset(path, text_unit="paragraph")] == ["para one\nstill one", "para two"]
    assert len(load_dataset(path, text_unit="line")) == 3


def test_text_folder_non_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("fine")
    (tmp_path / "b.txt").write_bytes(b"ok\nbad \xff byte\n")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    assert str(err.value.issues[0]).startswith(f"{tmp_path / 'b.txt'}:2: (encoding): not valid UTF-8")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"messages"}, "openai"),
        ({"instruction", "input", "output"}, "alpaca"),
        ({"instruction", "output", "generator"}, "alpaca"),
        ({"conversations", "system"}, "sharegpt"),
        ({"prompt", "chosen", "rejected"}, "preference"),
        ({"text"}, "text"),
        ({"text", "label"}, "classification"),
        ({"input"}, "eval"),
        ({"input", "reference", "context"}, "eval"),
    ],
)
def test_detection(keys: set[str], expected: str) -> None:
    assert detect_format(keys, source="f") == expected


def test_detection_kind_filter() -> None:
    assert detect_format({"text", "label"}, source="f", kind="text") == "text"


def test_ambiguous_shape_lists_the_candidates(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"messages": [], "conversations": []}])
    with pytest.raises(DataError, match="ambiguous format") as err:
        load_dataset(path)
    assert "'conversations', 'messages'" in err.value.message and "openai and sharegpt" in err.value.message


def test_unknown_shape_lists_formats_and_keys(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot tell the format") as err:
        load_dataset(jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}]))
    assert "'answer', 'question'" in err.value.message
    assert all(name in err.value.message for name in FORMAT_NAMES)


def test_override_skips_detection(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": "pos"}])
    assert load_dataset(path).kind == "classification"
    assert load_dataset(path, format="text", extra="ignore").kind == "text"
    with pytest.raises(DataError, match="unknown field"):
        load_dataset(path, format="text")


def test_bad_options_are_data_errors(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(DataError, match="unknown format 'chatml'"):
        load_dataset(path, format="chatml")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="holds chat records, not eval"):
        load_dataset(path, format="openai", kind="eval")
    with pytest.raises(DataError, match="unknown load option 'txt_field'"):
        load_dataset(path, txt_field="x")
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(DataError, match=r"unknown file type \.xml"):
        load_dataset(tmp_path / "d.xml")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.jsonl")


def test_null_is_a_type_error_not_a_missing_field(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "d.jsonl", [{"text": None, "label": "x"}]))
    assert err.value.issues[0].message == "Input should be a valid string, got null"


def test_kind_must_match_a_text_folder(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("doc")
    with pytest.raises(DataError, match="holds text records"):
        load_dataset(tmp_path, kind="chat")
