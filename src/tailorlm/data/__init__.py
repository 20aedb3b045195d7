"""Datasets: load the common formats into canonical, validated records.

    from tailorlm.data import load_dataset, token_stats
    ds = load_dataset("train.jsonl")            # format detected from the keys; every problem reported at once
    train, held_out = ds.split(eval_fraction=0.1, seed=0)
    token_stats(ds, tokenizer)                  # {"count", "min", "mean", "p50", "p95", "max"}

See ``docs/data.md`` for the formats, the detection rules and the error format.
"""

from tailorlm.data.formats import FORMAT_NAMES, FORMATS, Extra, FormatName, detect_format
from tailorlm.data.issues import Issue, IssueLog
from tailorlm.data.load import DEFAULT_MAX_RECORD_BYTES, Dataset, load_dataset
from tailorlm.data.readers import TextUnit
from tailorlm.data.records import (
    KINDS,
    ROLES,
    BinaryFeedbackRecord,
    ChatRecord,
    ClassificationRecord,
    EvalRecord,
    Kind,
    Message,
    PreferenceRecord,
    Record,
    Role,
    TextRecord,
    validate_record,
)
from tailorlm.data.stats import record_lengths, token_stats

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "FORMATS",
    "FORMAT_NAMES",
    "KINDS",
    "ROLES",
    "BinaryFeedbackRecord",
    "ChatRecord",
    "ClassificationRecord",
    "Dataset",
    "EvalRecord",
    "Extra",
    "FormatName",
    "Issue",
    "IssueLog",
    "Kind",
    "Message",
    "PreferenceRecord",
    "Record",
    "Role",
    "TextRecord",
    "TextUnit",
    "detect_format",
    "load_dataset",
    "record_lengths",
    "token_stats",
    "validate_record",
]
