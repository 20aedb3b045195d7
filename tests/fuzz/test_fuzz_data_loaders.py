"""Fuzz ``tailorlm.data.load_dataset``: every container and format, on random, structured and mutated input.

The property: a load returns a ``Dataset`` of valid canonical records, or raises a ``DataError`` whose issues
each read ``file:line: field: message`` on one line. Any other exception is a bug.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.fuzz_helpers import FIXTURES, assert_user_error, budget, counted, json_values, mutated_bytes, nasty_text
from tailorlm.data import FORMATS, Dataset, load_dataset
from tailorlm.data.records import RECORD_TYPES
from tailorlm.errors import DataError

pytestmark = pytest.mark.unit

SUFFIXES = [".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt", ".md", ".jsonl.gz"]


def _check(path: Path, **options: Any) -> Dataset | None:
    """Load ``path``; assert the result is valid records or a well-formed DataError. Returns the dataset."""
    try:
        ds = load_dataset(path, **options)
    except DataError as err:
        assert_user_error(err, path)
        return None
    record_type = RECORD_TYPES[ds.kind]
    assert all(isinstance(r, record_type) for r in ds.records)
    # The derived values a run records must not fail either: they hash and serialise every record.
    assert len(ds.fingerprint) == 64 and ds.summary()["records"] == len(ds)
    for issue in ds.issues:
        assert "\n" not in str(issue)
    return ds


def _write(data: bytes, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-data-"))
    path = folder / f"f{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    return path


@settings(max_examples=budget(60))
@given(data=st.binary(max_size=512), suffix=st.sampled_from(SUFFIXES))
@counted("data: random bytes")
def test_random_bytes_in_any_container(data: bytes, suffix: str) -> None:
    _check(_write(data, suffix))


REAL_FILES = sorted(p for p in FIXTURES.iterdir() if p.is_file())


@settings(max_examples=budget(120))
@given(st.data())
@counted("data: mutated real files")
def test_mutated_real_files(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(REAL_FILES))
    mutated = data.draw(mutated_bytes(original.read_bytes()))
    strict = data.draw(st.booleans())
    _check(_write(mutated, "".join(original.suffixes)), strict=strict)


@settings(max_examples=budget(20))
@given(st.data())
@counted("data: corrupt gzip")
def test_corrupt_gzip(data: st.DataObject) -> None:
    original = gzip.compress(data.draw(st.sampled_from(REAL_FILES)).read_bytes())
    path = Path(tempfile.mkdtemp(prefix="fuzz-gz-")) / "f.jsonl.gz"
    path.write_bytes(data.draw(mutated_bytes(original)))
    _check(path)


# --- structured rows: the right keys with wrong types, missing and extra keys --------------------------------

KEYS = sorted({k for spec in FORMATS.values() for k in spec.keys} | {"from", "value", "role", "content", "weight"})
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "bot"]) | nasty_text},
    optional={"content": json_values, "name": json_values, "tool_calls": json_values, "extra": json_values},
)
turn = st.fixed_dictionaries(
    {"from": st.sampled_from(["human", "gpt", "system", "function_call", "observation", "robot"]) | json_values},
    optional={"value": json_values | st.just('{"name": "f", "arguments": {}}'), "x": json_values},
)
# One row per format, with each value drawn from the type it should have or from any JSON value.
ROWS = {
    "openai": st.fixed_dictionaries(
        {"messages": st.lists(message, max_size=4) | json_values}, optional={"tools": json_values}
    ),
    "alpaca": st.fixed_dictionaries(
        {"instruction": nasty_text | json_values, "output": nasty_text | json_values},
        optional={
            "input": json_values,
            "system": json_values,
            "history": st.lists(st.lists(nasty_text)) | json_values,
        },
    ),
    "sharegpt": st.fixed_dictionaries(
        {"conversations": st.lists(turn, max_size=4) | json_values},
        optional={"system": json_values, "tools": json_values},
    ),
    "preference": st.fixed_dictionaries(
        {k: nasty_text | st.lists(message, max_size=3) | json_values for k in ("prompt", "chosen", "rejected")}
    ),
    "text": st.fixed_dictionaries({"text": nasty_text | json_values}, optional={"metadata": json_values}),
    "classification": st.fixed_dictionaries({"text": nasty_text, "label": json_values}),
    "eval": st.fixed_dictionaries(
        {"input": nasty_text | json_values},
        optional={"reference": json_values, "context": json_values, "metadata": json_values},
    ),
}
any_row = st.one_of(*ROWS.values(), st.dictionaries(st.sampled_from(KEYS) | nasty_text, json_values, max_size=5))


def _jsonl(rows: list[Any]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("utf-8", "surrogatepass")


def _csv(rows: list[dict[str, Any]], delimiter: str) -> bytes:
    header = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, escapechar="\\")
    writer.writerow(header)
    for r in rows:
        writer.writerow([v if isinstance(v, str) else json.dumps(v) for v in (r.get(k, "") for k in header)])
    return out.getvalue().encode("utf-8", "surrogatepass")


@settings(max_examples=budget(150))
@given(
    rows=st.lists(any_row | json_values, min_size=0, max_size=5),
    container=st.sampled_from(["jsonl", "json", "csv", "tsv", "parquet"]),
    options=st.fixed_dictionaries(
        {},
        optional={
            "format": st.sampled_from(list(FORMATS)),
            "extra": st.sampled_from(["forbid", "ignore", "metadata"]),
            "require_assistant": st.booleans(),
            "strict": st.booleans(),
            "max_record_bytes": st.integers(1, 400),
        },
    ),
)
@counted("data: structured rows (chat, alpaca, sharegpt, preference, ...)")
def test_structured_rows(rows: list[Any], container: str, options: dict[str, Any]) -> None:
    if container == "jsonl":
        path = _write(_jsonl(rows), ".jsonl")
    elif container == "json":
        path = _write(json.dumps(rows, indent=1, ensure_ascii=False).encode("utf-8", "surrogatepass"), ".json")
    elif container in ("csv", "tsv"):
        dicts = [r for r in rows if isinstance(r, dict)]
        path = _write(_csv(dicts, "," if container == "csv" else "\t"), f".{container}")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        dicts = [r for r in rows if isinstance(r, dict)]
        path = Path(tempfile.mkdtemp(prefix="fuzz-pq-")) / "f.parquet"
        try:
            table = pa.Table.from_pylist(dicts)
            pq.write_table(table, path)
        except (pa.ArrowException, ValueError, TypeError, OverflowError, UnicodeError):
            return  # pyarrow cannot store these values (mixed types): no file, nothing to load
    _check(path, **options)


@settings(max_examples=budget(25))
@given(
    data=st.binary(max_size=300) | st.text().map(lambda t: t.encode("utf-8", "surrogatepass")),
    suffix=st.sampled_from([".txt", ".md"]),
    unit=st.sampled_from(["file", "paragraph", "line"]),
)
@counted("data: txt/md files and folders")
def test_text_files_and_folders(data: bytes, suffix: str, unit: str) -> None:
    path = _write(data, suffix)
    _check(path, text_unit=unit)
    (path.parent / "sub").mkdir()
    (path.parent / "sub" / f"g{suffix}").write_bytes(data[::-1])
    _check(path.parent, text_unit=unit)


@settings(max_examples=budget(30))
@given(data=st.binary(max_size=256))
@counted("data: parquet bytes")
def test_random_parquet_bytes(data: bytes) -> None:
    _check(_write(b"PAR1" + data + b"PAR1", ".parquet"))


# Deterministic regressions for the bugs the fuzzing found; each was an uncaught exception before the fix.
@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("deep.jsonl", b"[" * 100_000 + b"\n"),
        ("deep.json", b"[" + b"[" * 100_000),
        ("deep_obj.json", b'{"a":' * 100_000),
        ("bigint.jsonl", b'{"text": "a", "metadata": {"n": ' + b"1" * 5000 + b"}}\n"),
        ("bigint.json", b'[{"text": ' + b"1" * 5000 + b"}]"),
        ("surrogate.jsonl", b'{"text": "\\ud800"}\n'),
        ("surrogate.json", b'[{"text": "ok"}, {"text": "\\udfff"}]'),
        ("notgzip.jsonl.gz", b"not gzip at all"),
        ("truncated.jsonl.gz", gzip.compress(b'{"text": "a"}\n')[:-6]),
        ("empty_key.jsonl", b'{"text": "a", "": 1}\n'),
    ],
)
def test_regressions(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert_user_error(info.value, path)
