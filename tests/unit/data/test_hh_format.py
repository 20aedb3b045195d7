"""Anthropic-HH transcripts: the shared turns become the prompt, the final Assistant turns the two answers."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.data import PreferenceRecord, detect_format, load_dataset
from tailorlm.data.records import record_to_dict
from tailorlm.errors import DataError

pytestmark = pytest.mark.unit


def hh(*turns: str) -> str:
    """``hh("Human: hi", "Assistant: hello")`` → the HH transcript ``"\\n\\nHuman: hi\\n\\nAssistant: hello"``."""
    return "".join(f"\n\n{t}" for t in turns)


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_single_turn_pair_is_conversational(tmp_path: Path) -> None:
    row = {
        "chosen": hh("Human: How do I pick a lock?", "Assistant: I can't help."),
        "rejected": hh("Human: How do I pick a lock?", "Assistant: Use a tension wrench."),
    }
    ds = load_dataset(jsonl(tmp_path / "d.jsonl", [row]))
    assert (ds.format, ds.kind, len(ds)) == ("hh", "preference", 1)
    assert isinstance(ds[0], PreferenceRecord)
    # TRL's conversational form, as the serving export writes it: a prompt of messages, one assistant message each.
    assert record_to_dict(ds[0]) == {
        "prompt": [{"role": "user", "content": "How do I pick a lock?"}],
        "chosen": [{"role": "assistant", "content": "I can't help."}],
        "rejected": [{"role": "assistant", "content": "Use a tension wrench."}],
    }


def test_multi_turn_prefix_becomes_the_prompt(tmp_path: Path) -> None:
    shared = ("Human: what are some pranks?", "Assistant: With a pen?", "Human: yep")
    row = {"chosen": hh(*shared, "Assistant:  Draw a moustache.  "), "rejected": hh(*shared, "Assistant: No.")}
    [record] = load_dataset(jsonl(tmp_path / "d.jsonl", [row]), kind="preference")
    assert [(m.role, m.content) for m in record.prompt] == [
        ("user", "what are some pranks?"),
        ("assistant", "With a pen?"),
        ("user", "yep"),
    ]
    assert (record.chosen[0].content, record.rejected[0].content) == ("Draw a moustache.", "No.")


def test_consecutive_turns_of_one_speaker_are_joined(tmp_path: Path) -> None:
    # HH has a few "Assistant: … Assistant: …" runs; chat templates that require alternation would refuse them.
    row = {
        "chosen": hh("Human: hi", "Assistant: One moment.", "Assistant: Back now.", "Human: ok", "Assistant: Done."),
        "rejected": hh("Human: hi", "Assistant: One moment.", "Assistant: Back now.", "Human: ok", "Assistant: No."),
    }
    [record] = load_dataset(jsonl(tmp_path / "d.jsonl", [row]))
    assert [m.role for m in record.prompt] == ["user", "assistant", "user"]
    assert record.prompt[1].content == "One moment.\n\nBack now."
    # A final answer split over two Assistant turns is one answer too.
    row = {"chosen": hh("Human: hi", "Assistant: a", "Assistant: b"), "rejected": hh("Human: hi", "Assistant: c")}
    [record] = load_dataset(jsonl(tmp_path / "e.jsonl", [row]))
    assert (record.chosen[0].content, record.rejected[0].content) == ("a\n\nb", "c")


def test_detection_from_keys() -> None:
    assert detect_format({"chosen", "rejected"}, source="f") == "hh"
    assert detect_format({"chosen", "rejected"}, source="f", kind="preference") == "hh"
    assert detect_format({"prompt", "chosen", "rejected"}, source="f") == "preference"  # explains more keys


def test_a_transcript_may_omit_the_leading_blank_lines(tmp_path: Path) -> None:
    row = {"chosen": "Human: hi\n\nAssistant: hello", "rejected": "Human: hi\n\nAssistant: go away"}
    [record] = load_dataset(jsonl(tmp_path / "d.jsonl", [row]), format="hh")
    assert record.prompt[0].content == "hi"


MALFORMED = [
    # (row, field, words in the message)
    ({"chosen": "just some text", "rejected": hh("Human: a", "Assistant: b")}, "chosen", "not an Anthropic-HH"),
    ({"chosen": hh("Assistant: hello"), "rejected": hh("Assistant: hi")}, "chosen", "no Human turn"),
    (
        {"chosen": hh("Human: a", "Assistant: "), "rejected": hh("Human: a", "Assistant: b")},
        "chosen",
        "final Assistant",
    ),
    (
        {"chosen": hh("Human: a", "Assistant: b"), "rejected": hh("Human: a", "Assistant: b", "Human: c")},
        "rejected",
        "ends with a Human turn",
    ),
    (
        {"chosen": hh("Human: ", "Assistant: b"), "rejected": hh("Human: a", "Assistant: c")},
        "chosen",
        "turn 1 (Human)",
    ),
    (
        {"chosen": hh("Human: a", "Assistant: b"), "rejected": hh("Human: X", "Assistant: c")},
        "rejected",
        "does not share the conversation",
    ),
    (
        {
            "chosen": hh("Human: a", "Assistant: b", "Human: c", "Assistant: d"),
            "rejected": hh("Human: a", "Assistant: e"),
        },
        "rejected",
        "differ at message 2",
    ),
    ({"chosen": 7, "rejected": hh("Human: a", "Assistant: b")}, "chosen", "expected a string, got int"),
    (
        {"chosen": [{"role": "assistant", "content": "x"}], "rejected": hh("Human: a", "Assistant: b")},
        "chosen",
        "expected a string, got list",
    ),
    ({"chosen": hh("Human: a", "Assistant: b")}, "rejected", "missing required field"),
    ({"chosen": "   ", "rejected": hh("Human: a", "Assistant: b")}, "chosen", "empty text"),
    (
        {"chosen": hh("Human: a", "Assistant: b"), "rejected": hh("Human: a", "Assistant:  b ")},
        "rejected",
        "identical",
    ),
]


def test_malformed_transcripts_name_line_and_field(tmp_path: Path) -> None:
    good = {"chosen": hh("Human: a", "Assistant: b"), "rejected": hh("Human: a", "Assistant: c")}
    rows = [good] + [row for row, _, _ in MALFORMED] + ["{not json", good]
    path = jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_dataset(path, format="hh")
    found = {(i.line, i.field): i for i in err.value.issues}
    for line, (_, field, words) in enumerate(MALFORMED, start=2):
        issue = found.get((line, field))
        assert issue is not None, f"line {line}: no issue on {field}: {[str(i) for i in err.value.issues]}"
        assert words in issue.message, str(issue)
        assert str(issue).startswith(f"{path}:{line}: {field}: ")
    assert (len(MALFORMED) + 2, "(record)") in found  # the broken JSON line
    # strict=False keeps the good rows and lists the rest.
    ds = load_dataset(path, format="hh", strict=False)
    assert len(ds) == 2 and ds.issue_count == len(err.value.issues)


def test_unknown_keys_and_the_prompt_key(tmp_path: Path) -> None:
    row = {"chosen": hh("Human: a", "Assistant: b"), "rejected": hh("Human: a", "Assistant: c"), "id": 3}
    with pytest.raises(DataError) as err:
        load_dataset(jsonl(tmp_path / "d.jsonl", [row]), format="hh")
    assert [(i.line, i.field) for i in err.value.issues] == [(1, "id")]
    assert len(load_dataset(tmp_path / "d.jsonl", format="hh", extra="ignore")) == 1


def test_validate_cli_reads_hh(tmp_path: Path) -> None:
    row = {"chosen": hh("Human: a", "Assistant: b"), "rejected": hh("Human: a", "Assistant: c")}
    path = jsonl(tmp_path / "d.jsonl", [row, row])
    result = CliRunner().invoke(app, ["data", "validate", str(path), "-t", "none", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["format"], report["kind"], report["records"]) == ("hh", "preference", 2)
    bad = jsonl(tmp_path / "bad.jsonl", [row, {"chosen": hh("Human: a", "Assistant: b"), "rejected": "nope"}])
    result = CliRunner().invoke(app, ["data", "validate", str(bad), "-t", "none"])
    assert result.exit_code == 1
    assert f"{bad}:2: rejected: not an Anthropic-HH transcript" in result.output


@pytest.mark.slow
def test_real_hh_harmless_file(shared_data: Path) -> None:
    """The 2,312 HH-RLHF harmless-base test pairs (Anthropic, MIT): 4 have an empty chosen answer and are dropped."""
    path = shared_data / "hh_rlhf" / "harmless_base_test.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with pytest.raises(DataError):
        load_dataset(path, kind="preference")  # strict: the 4 broken rows are errors
    ds = load_dataset(path, kind="preference", strict=False)
    assert (ds.format, len(ds)) == ("hh", 2308)
    assert [(i.line, i.field, i.message) for i in ds.issues] == [
        (line, "chosen", "the final Assistant turn is empty") for line in (87, 517, 926, 1104)
    ]
    assert all(r.prompt[-1].role == "user" and len(r.chosen) == len(r.rejected) == 1 for r in ds)
    roles = [[m.role for m in r.prompt] for r in ds]
    assert all(all(a != b for a, b in pairwise(rs)) for rs in roles)  # turns alternate
