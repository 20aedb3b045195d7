"""Preflight: check everything a ladder reads before any model loads or any training starts.

A ladder run costs minutes to hours; a typo in the eval file's 400th line, an empty documents folder or a train
file in the wrong format must cost milliseconds instead. ``preflight`` loads each data file the ladder will read
with the project's own loaders (``tailorlm.data``, ``tailorlm.eval.examples``, ``tailorlm.rag.readers``), so the
checks are the ones the ladder would hit later, only earlier, and every error names the file, the line and the
field, plus the ``task.yaml`` key that points at the file:

    report = preflight(Task.load("task.yaml"), needs={"train", "documents"})
    report.eval_n, report.train_n, report.documents_n, report.notes

The eval set is always checked; ``needs`` adds the optional data that the planned rungs read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tailorlm.core.task import DataSpec, Task
from tailorlm.data import Dataset, load_dataset
from tailorlm.data.issues import IssueLog
from tailorlm.data.readers import container_for, read_rows
from tailorlm.errors import ConfigError, DataError

Need = Literal["train", "documents", "preference"]
NEEDS: frozenset[str] = frozenset({"train", "documents", "preference"})

# Below this many eval examples a 95% bootstrap interval on a 0-1 metric is wider than about ±0.15: differences
# between rungs smaller than that cannot be told from noise, and the user should know before paying for a run.
SMALL_EVAL = 50
SMALL_TRAIN = 20
# How many problems an error message lists inline; the chained loader error keeps them all in ``issues``.
SHOWN_ISSUES = 10


class RungCheck(BaseModel):
    """Whether one rung can run on this task, and if not, why and what to change."""

    name: str
    title: str
    runs: bool
    reason: str | None = Field(
        None, description="Why it does not run: it does not apply, or its data cannot be built."
    )
    fix: str | None = Field(None, description="What to change so that it runs (a column to map, a field to add).")
    applies: bool = Field(True, description="False: the task lacks what the rung needs (no train:, no documents:).")
    rows: int | None = Field(None, description="Rows its data preparation built (demonstrations, SFT rows, …).")


class PreflightReport(BaseModel):
    """What the ladder will read, counted, and what the user should know about it before it runs."""

    task_file: str = Field(description="The task.yaml the checks refer to.")
    eval_path: str = Field(description="The eval file, resolved.")
    eval_n: int = Field(description="Eval examples the ladder scores (after the task's shuffle and limit).")
    eval_records: int = Field(description="Records in the eval file.")
    train_path: str | None = None
    train_n: int | None = Field(None, description="Training records (after `train.limit`); None: not checked.")
    train_kind: Literal["eval", "chat"] | None = Field(
        None, description="eval: input + reference records; chat: conversations (OpenAI, Alpaca, ShareGPT)."
    )
    documents_path: str | None = None
    documents_n: int | None = Field(None, description="Files with at least one readable document.")
    documents_records: int | None = Field(None, description="Documents read (a JSONL file holds one per record).")
    preference_path: str | None = None
    preference_n: int | None = Field(None, description="Preference pairs (after `preference.limit`).")
    notes: list[str] = Field(default_factory=list, description="Warnings that do not stop the ladder.")

    rungs: list[RungCheck] = Field(
        default_factory=list, description="Whether each planned rung can run (check_rungs); empty: not checked."
    )

    def counts(self) -> dict[str, int | None]:
        return {"eval": self.eval_n, "train": self.train_n, "documents": self.documents_n}


def task_file_of(task: Task) -> Path:
    """Where ``task`` was loaded from, for messages: ``Task.load`` records the folder, and the file is task.yaml."""
    return Path(task.base_dir or ".") / "task.yaml"


def preflight(task: Task, needs: set[str], *, task_file: str | Path | None = None) -> PreflightReport:
    """Check the eval set and the data in ``needs`` (a subset of train, documents, preference) without a model.

    Raises ``DataError`` (a file is missing, unreadable or has bad records: the message names file:line: field and
    the task key) or ``ConfigError`` (the task lacks a block that ``needs`` asks for). ``task_file`` only names the
    task in messages; by default it is ``task.yaml`` in ``task.base_dir``.
    """
    unknown = set(needs) - NEEDS
    if unknown:  # a caller's bug, not the user's: no TailorError
        raise ValueError(f"preflight: unknown needs {sorted(unknown)}; valid: {sorted(NEEDS)}")
    where = str(task_file) if task_file is not None else str(task_file_of(task))
    # Order matters: the eval set is what every rung is scored on, so its errors come first.
    report, eval_inputs = _check_eval(task, where)
    if "documents" in needs:
        _check_documents(task, where, report)
    if "train" in needs:
        _check_train(task, where, report, eval_inputs)
    if "preference" in needs:
        _check_preference(task, where, report)
    return report


# --- shared helpers --------------------------------------------------------------------------------------------


def _missing_block(where: str, key: str, what: str) -> ConfigError:
    return ConfigError(
        f"{where}: the planned rungs need {what}, but the task has no `{key}:` block",
        hint=f"add `{key}: {{path: FILE}}` to {where}, or leave out the rungs that use it",
    )


def _data_file(task: Task, spec: DataSpec, key: str, where: str, *, folder_ok: bool = False) -> Path:
    """The resolved path of ``spec``; a clear error when it is missing, or a folder where a file is expected."""
    path = task.resolve(spec.path)
    if not path.exists():
        raise DataError(
            f"{where}: {key}.path: {path}: no such file",
            hint=f"fix `{key}.path` (relative paths are resolved against the folder of {Path(where).name})",
        )
    if path.is_dir() and not folder_ok:
        raise DataError(f"{where}: {key}.path: {path} is a folder; expected a file of records")
    return path


def _wrap(err: DataError, where: str, key: str) -> DataError:
    """The loader's error, prefixed with the task key, with the first problems in the message itself.

    The loader keeps problems in ``issues`` (the CLI prints them below the message); a caller that only shows
    ``str(err)`` would lose file:line: field, so the first ones go into the message, and ``__cause__`` keeps all.
    """
    lines = [f"{where}: {key}.path: {err.message}"]
    lines += [f"  {issue}" for issue in err.issues[:SHOWN_ISSUES]]
    if len(err.issues) > SHOWN_ISSUES:
        lines.append(f"  … and {len(err.issues) - SHOWN_ISSUES} more")
    return DataError("\n".join(lines), hint=err.hint)


def _options(spec: DataSpec) -> dict[str, str]:
    return {f"{key}_field": column for key, column in spec.fields.items()}


def _limited(n: int, spec: DataSpec) -> int:
    return min(n, spec.limit) if spec.limit else n


def _record_lines(path: Path) -> Iterator[int]:
    """The line of each record of a file that loaded without issues, in record order.

    A strict load that succeeded turned every row ``read_rows`` yields into one record, in the same order, so the
    rows' lines are the records' lines. Canonical records do not keep their line, and this is how we get it back
    for the checks the loader does not make (a missing reference).
    """
    container = container_for(path)
    if container is None or container == "text":
        return iter(())
    return (row.line for row in read_rows(path, container, IssueLog(), max_record_bytes=2**62))


def _missing_references(dataset: Dataset, path: Path, column: str) -> list[str]:
    """``file:line: column: …`` for each eval-style record with no reference (None, blank text or empty list)."""
    problems = []
    for record, line in zip(dataset.records, _record_lines(path), strict=False):
        ref = record.reference
        if ref is None:
            problems.append(f"{path}:{line}: {column}: missing reference")
        elif isinstance(ref, str) and not ref.strip():
            problems.append(f"{path}:{line}: {column}: empty reference")
        elif isinstance(ref, list) and not [r for r in ref if r.strip()]:
            problems.append(f"{path}:{line}: {column}: no non-empty reference in the list")
    return problems


def _raise_problems(where: str, key: str, path: Path, problems: Sequence[str], why: str) -> None:
    if not problems:
        return
    shown = [f"  {p}" for p in problems[:SHOWN_ISSUES]]
    if len(problems) > SHOWN_ISSUES:
        shown.append(f"  … and {len(problems) - SHOWN_ISSUES} more")
    raise DataError(
        f"{where}: {key}.path: {path}: {len(problems)} record(s) {why}\n" + "\n".join(shown),
        hint=f"if the answers are in another column, map it: `{key}.fields: {{reference: COLUMN}}` in {where}",
    )


_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


# --- eval --------------------------------------------------------------------------------------------------------


def _check_eval(task: Task, where: str) -> tuple[PreflightReport, set[str]]:
    """Check the eval set; also return its normalized inputs, for the train-leak check."""
    from tailorlm.eval.examples import build_examples
    from tailorlm.eval.metrics import get_metric

    path = _data_file(task, task.eval, "eval", where)
    try:
        # The same call the eval runner makes: loading, field mapping, shuffle, limit and the input template.
        examples, dataset = build_examples(task)
    except DataError as err:
        raise _wrap(err, where, "eval") from err
    except ConfigError as err:  # the input template fails on a record: say which task key is at fault
        raise ConfigError(f"{where}: input_template: {err.message}", hint=err.hint) from err
    needing = [m for m in task.metrics if get_metric(m).needs_reference]
    if needing:
        column = task.eval.fields.get("reference", "reference")
        _raise_problems(
            where,
            "eval",
            path,
            _missing_references(dataset, path, column),
            f"lack the reference that {', '.join(needing)} need",
        )
    report = PreflightReport(task_file=where, eval_path=str(path), eval_n=len(examples), eval_records=len(dataset))
    if len(examples) < SMALL_EVAL:
        report.notes.append(
            f"only {len(examples)} eval examples: confidence intervals will be wide, "
            "and small differences between rungs will not be significant"
        )
    if task.eval.limit and task.eval.limit > len(dataset):
        report.notes.append(f"eval.limit is {task.eval.limit}, but the eval file holds {len(dataset)} records")
    inputs = [_norm(r.input) for r in dataset.records]
    if (duplicates := len(inputs) - len(set(inputs))) > 0:
        report.notes.append(f"{duplicates} eval input(s) appear more than once: they weigh double in every metric")
    if task.category_field and not any(task.category_field in r.metadata for r in dataset.records):
        report.notes.append(f"category_field {task.category_field!r} is in no eval record: no per-category results")
    return report, set(inputs)


# --- documents ---------------------------------------------------------------------------------------------------


def _check_documents(task: Task, where: str, report: PreflightReport) -> None:
    from tailorlm.rag.readers import ReaderOptions, ReadProblem, iter_documents, supported_suffixes

    spec = task.documents
    if spec is None:
        raise _missing_block(where, "documents", "knowledge documents")
    path = task.resolve(spec.path)
    if not path.exists():
        raise DataError(
            f"{where}: documents.path: {path}: no such file or folder",
            hint=f"fix `documents.path` (relative paths are resolved against the folder of {Path(where).name})",
        )
    files: set[str] = set()
    records = 0
    problems: list[str] = []
    # The ingest step's own reader with the task's globs: what it reads here is what the RAG rungs will index.
    for item in iter_documents(path, ReaderOptions(include=spec.include, exclude=spec.exclude)):
        if isinstance(item, ReadProblem):
            problems.append(str(item))
        else:
            files.add(item.source)
            records += 1
    if not files:
        what = "a folder" if path.is_dir() else "a file"
        detail = f"; {len(problems)} could not be read:\n" + "\n".join(f"  {p}" for p in problems[:SHOWN_ISSUES])
        raise DataError(
            f"{where}: documents.path: {path} ({what}) holds no readable document" + (detail if problems else ""),
            hint=f"put documents there ({', '.join(supported_suffixes())}), or check documents.include "
            f"{spec.include} and documents.exclude {spec.exclude}",
        )
    report.documents_path, report.documents_n, report.documents_records = str(path), len(files), records
    if problems:
        report.notes.append(
            f"{len(problems)} document(s) or record(s) under {path} cannot be read and will be left out; "
            f"the first: {problems[0]}"
        )


# --- train -------------------------------------------------------------------------------------------------------


def _check_train(task: Task, where: str, report: PreflightReport, eval_inputs: set[str]) -> None:
    from tailorlm.ladder.training_data import load_training, references

    spec = task.train
    if spec is None:
        raise _missing_block(where, "train", "training data")
    path = _data_file(task, spec, "train", where)
    try:
        # The one reader every rung uses: train.fields, the eval loader and the template, or a chat file.
        data = load_training(task)
    except DataError as err:
        raise _wrap(err, where, "train") from err
    except ConfigError as err:  # the input template fails on a training record
        raise ConfigError(f"{where}: input_template (on train records): {err.message}", hint=err.hint) from err
    if data.kind == "eval":
        # Not an error here: a rung that needs answers says it cannot run (check_rungs), the others go on.
        column = spec.fields.get("reference", "reference")
        missing = _missing_references(_reloaded(task, spec), path, column)
        if missing:
            report.notes.append(
                f"{len(missing)} training record(s) lack a reference, and rungs that learn from answers leave them "
                f"out; the first: {missing[0]}"
            )
    else:
        report.notes.append(
            f"the training data is {data.format} chat records: every rung reads the first user turn as the "
            "question and the last assistant turn as the answer"
        )
    report.train_path, report.train_kind, report.train_n = str(path), data.kind, len(data.examples)
    if not [ex for ex in data.examples if references(ex)]:
        return  # check_rungs says what cannot run, and why
    if report.train_n < SMALL_TRAIN:
        report.notes.append(f"only {report.train_n} training record(s): few-shot and LoRA have little to learn from")
    # Eval questions in the training data inflate every trained or few-shot rung: a leak the report cannot see.
    train_inputs = {_norm(str(ex.record.get("input") or ex.text)) for ex in data.examples}
    if leaked := len(eval_inputs & train_inputs):
        report.notes.append(
            f"{leaked} eval input(s) also appear in the training data: trained and few-shot rungs will look better "
            "than they are; remove them from the train file"
        )


def _reloaded(task: Task, spec: DataSpec) -> Dataset:
    from tailorlm.eval.examples import load_records

    return load_records(task, spec)[1]


# --- preference --------------------------------------------------------------------------------------------------


def _check_preference(task: Task, where: str, report: PreflightReport) -> None:
    spec = task.preference
    if spec is None:
        raise _missing_block(where, "preference", "preference pairs")
    path = _data_file(task, spec, "preference", where)
    try:
        dataset = load_dataset(path, spec.format, kind="preference", **_options(spec))  # type: ignore[arg-type]
    except DataError as err:
        raise _wrap(err, where, "preference") from err
    report.preference_path, report.preference_n = str(path), _limited(len(dataset), spec)
    if report.preference_n < SMALL_TRAIN:
        report.notes.append(f"only {report.preference_n} preference pair(s): preference tuning has little signal")


# --- rungs -------------------------------------------------------------------------------------------------------


def check_rungs(task: Task, names: list[str] | None = None, *, ctx: Any = None) -> list[RungCheck]:
    """Every rung (or the named ones), and whether it can run: it applies to the task's data, and its data
    preparation (``Rung.prepare``: demonstrations, SFT rows, RAFT questions, head labels) succeeds, without a model.

    ``tailor init``'s "runs" column and ``tailor ladder``'s preflight both come from here, and the ladder builds
    with the same ``prepare``, so "runs" means the rung's data will build. It runs on every training record, not a
    sample: a head's label set and the prompt search's record count are properties of the whole file, and building
    rows costs milliseconds per thousand records. Retrieval (RAFT's gold passages) needs the embedder and is not
    tried. ``ctx`` is the ladder's context (its settings, e.g. ``--quick``'s smaller ones);
    by default the task's own ladder settings.
    """
    from tailorlm.errors import TailorError
    from tailorlm.ladder.context import LadderContext
    from tailorlm.ladder.rungs import applicable

    if ctx is None:
        ctx = LadderContext(task=task, config=task.ladder, model="default", dir=Path("."), progress=False)
    checks = []
    for rung, why in applicable(task, names):
        check = RungCheck(name=rung.name, title=rung.title, runs=why is None, reason=why, applies=why is None)
        if why is None:
            try:
                check.rows = len(rung.prepare(ctx))
            except TailorError as err:
                issues = getattr(err, "issues", None) or []  # a load error: its first file:line: field
                check.runs, check.fix = False, err.hint
                check.reason = err.message + (f" ({issues[0]})" if issues else "")
        checks.append(check)
    return checks


def cannot_run(checks: Sequence[RungCheck], where: str) -> DataError:
    """One error for the rungs that apply but cannot run: each with its reason and its fix."""
    lines = [f"{where}: {len([c for c in checks if not c.runs])} requested rung(s) cannot run:"]
    for c in checks:
        if not c.runs:
            lines.append(f"  {c.title}: {c.reason}" + (f" (fix: {c.fix})" if c.fix else ""))
    return DataError("\n".join(lines), hint="fix the data or task.yaml, or leave these rungs out (--rungs)")
