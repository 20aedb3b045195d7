"""One way to read a task's training records: every rung, the preflight and `tailor rag make-sft-data --task`.

The training file is read as the eval set is read, through the task's ``train.fields`` mapping and its input
template, so a column the prompt rungs find is a column the training rungs find too. Chat files (OpenAI messages,
Alpaca, ShareGPT) need no mapping: the first user turn is the input and the last assistant turn the reference.

    data = load_training(task)            # DataError with file:line: field when the file does not load
    data.examples                         # Example(id, text (templated), reference, record={input, metadata…})
    raft_queries(data.examples)           # questions with their references and gold ids, for RAFT

What each rung builds from these examples (demonstrations, SFT rows, RAFT queries, head labels) lives beside the
rung (``Rung.prepare``) and is model-free, so the preflight can run exactly the code the ladder runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tailorlm.core.task import DataSpec, Task
from tailorlm.errors import DataError
from tailorlm.eval.examples import Example

# Metadata keys that name a RAFT record's gold passage; eval-style rows keep unknown columns as metadata.
GOLD_KEYS = ("gold", "doc_ids")


@dataclass
class TrainingData:
    """A task's training records, read once: where from, which kind, and the examples (after ``train.limit``)."""

    path: Path
    kind: Literal["eval", "chat"]
    format: str | None
    examples: list[Example]
    records: int  # in the file, before train.limit


def field_options(spec: DataSpec) -> dict[str, str]:
    """``fields: {input: question}`` as the loaders' keyword options (``input_field="question"``)."""
    return {f"{key}_field": column for key, column in spec.fields.items()}


def load_training(task: Task, spec: DataSpec | None = None) -> TrainingData:
    """The task's training records (or ``spec``'s), read through its fields mapping; chat files count too.

    Raises ``DataError`` naming file:line: field when a record does not load, and when the file holds records of
    another kind (preference pairs, bare text): those are not training records for the ladder's rungs.
    """
    from tailorlm.data import load_dataset
    from tailorlm.eval.examples import build_examples

    spec = spec or task.train
    if spec is None:
        raise DataError("the task has no training data (train:)", hint="add `train: {path: FILE}` to task.yaml")
    path = task.resolve(spec.path)
    # Detected over every format, not only eval: an Alpaca file has an `input` key too, and read as eval it would
    # "load" with its instruction and output hidden in metadata. extra="ignore" because eval-style rows carry ids
    # and doc_ids, which the eval loader below keeps as metadata.
    detected = load_dataset(path, spec.format, extra="ignore", **field_options(spec))  # type: ignore[arg-type]
    if detected.kind == "chat":
        examples = _chat_examples(task, detected.records)
        if spec.shuffle_seed is not None:
            import random

            random.Random(spec.shuffle_seed).shuffle(examples)
        examples = examples[: spec.limit] if spec.limit else examples
        return TrainingData(path, "chat", detected.format, examples, len(detected))
    if detected.kind != "eval":
        raise DataError(
            f"{path} holds {detected.kind} records ({detected.format} format), not training records",
            hint="training data is eval-style records (input + reference; map columns with train.fields) or chat "
            "records: OpenAI messages, Alpaca (instruction/output) or ShareGPT (conversations)",
        )
    # Exactly how the eval set is read: the eval loader, the fields mapping, shuffle, limit and input template.
    examples, dataset = build_examples(task.model_copy(update={"eval": spec}))
    return TrainingData(path, "eval", detected.format, examples, len(dataset))


def _chat_examples(task: Task, records: list[Any]) -> list[Example]:
    """First user turn → input (as the user wrote it: a chat file is already what the model is shown), last
    assistant turn → reference. A chat without either is left with no reference: rungs that need one skip it."""
    examples = []
    for i, record in enumerate(records):
        user = next((m.content for m in record.messages if m.role == "user" and m.content), None)
        answer = next((m.content for m in reversed(record.messages) if m.role == "assistant" and m.content), None)
        if not isinstance(user, str):
            continue
        digest = hashlib.sha256(user.encode()).hexdigest()[:12]
        meta = dict(record.metadata or {})
        examples.append(
            Example(
                id=str(meta.get("id", f"train-{i}-{digest}")),
                text=user,
                reference=[answer] if isinstance(answer, str) else None,
                record={"input": user, "reference": answer, "metadata": meta},
            )
        )
    return examples


# --- what the rungs read from an example --------------------------------------------------------------------------


def references(example: Example) -> list[str]:
    """The example's non-blank references, in order (an int label read from JSON counts as its text)."""
    ref = example.reference
    items = ref if isinstance(ref, list) else [] if ref is None else [ref]
    return [str(r) for r in items if str(r).strip()]


def reference_text(example: Example) -> str | None:
    refs = references(example)
    return refs[0] if refs else None


def question(example: Example) -> str:
    """The raw question (before the task's template): what a retriever searches with, as at inference."""
    return str(example.record.get("input") or example.text)


def gold_ids(example: Example) -> tuple[list[str], list[dict[str, Any]]]:
    """``(doc_ids, gold spans)`` from the example's metadata (columns named ``doc_ids`` and ``gold``)."""
    meta = example.record.get("metadata") or {}
    doc_ids = meta.get("doc_ids") or []
    gold = meta.get("gold") or []
    doc_ids = [doc_ids] if isinstance(doc_ids, str) else [str(d) for d in doc_ids] if isinstance(doc_ids, list) else []
    gold = [g for g in gold if isinstance(g, dict)] if isinstance(gold, list) else []
    return doc_ids, gold


def with_references(examples: list[Example], what: str, path: Path | str) -> list[Example]:
    """The examples that have a reference; a ``DataError`` with the fix when none has."""
    kept = [ex for ex in examples if reference_text(ex) is not None]
    if not kept:
        raise DataError(
            f"{path}: none of the {len(examples)} training record(s) has a reference: {what} has nothing to learn",
            hint="if the answers are in another column, map it: `train.fields: {reference: COLUMN}` in task.yaml"
            + _other_columns(examples),
        )
    return kept


def _other_columns(examples: list[Example]) -> str:
    """The unmapped columns of the records (kept as metadata): where the answers may be."""
    columns = sorted({k for ex in examples[:100] for k in (ex.record.get("metadata") or {})} - {"id", *GOLD_KEYS})
    return f"; unmapped columns in the file: {', '.join(columns)}" if columns else ""


def sft_rows(examples: list[Example]) -> list[dict[str, Any]]:
    """Chat records to fine-tune on: the input as the eval set shows it (the task's template), answered with the
    first reference. Examples without a reference are left out (``with_references`` says when none is left)."""
    return [
        {"messages": [{"role": "user", "content": ex.text}, {"role": "assistant", "content": ref}]}
        for ex in examples
        if (ref := reference_text(ex)) is not None
    ]


def write_sft_data(task: Task, path: Path) -> Path:
    """The task's training records as the SFT rows the ladder's LoRA rung trains on, written to ``path`` (OpenAI
    chat JSONL, what `tailor train sft` reads): `tailor train sft --train-from task.yaml`."""
    from tailorlm.core.io import atomic_write_text

    data = load_training(task)
    rows = sft_rows(with_references(data.examples, "SFT", data.path))
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def raft_queries(examples: list[Example], path: Path | str) -> list[Any]:
    """RAFT's questions: each example's raw question, its references and any gold ids (``doc_ids``, ``gold``).

    RAFT trains the model to answer with the reference, so a record without one is left out whatever gold ids it
    has; when no record is left, RAFT cannot run (``DataError`` with the fix). Gold ids are optional: without them
    the gold passage is found by matching the answer in the indexed chunks.
    """
    from tailorlm.rag.evaluation import RetrievalQuery

    queries = []
    for ex in examples:
        if refs := references(ex):
            doc_ids, gold = gold_ids(ex)
            queries.append(RetrievalQuery(ex.id, question(ex), refs, doc_ids, gold))
    if not queries:
        raise DataError(
            f"{path}: none of the {len(examples)} training record(s) has a reference answer: RAFT trains the model "
            "to answer each question from its gold passage, and has no answer to train on (gold ids alone are not "
            "enough)",
            hint="map the answer column: `train.fields: {reference: COLUMN}` in task.yaml" + _other_columns(examples),
        )
    return queries
