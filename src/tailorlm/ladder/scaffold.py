"""``tailor init``: write a commented ``task.yaml`` from what a user has, and check it before anything runs.

What a user has is a folder: an eval file of questions with reference answers, maybe a folder of documents,
maybe training data and preference pairs. The steps read top to bottom in ``scaffold``:

1. find the files (``find_inputs``): options first, then common names inside the folder;
2. read the eval file's columns with the project's readers and map them onto the canonical keys (``guess_fields``);
3. load the eval set with the eval loader and choose metrics and a token budget from its references
   (``choose_metrics``): class labels → accuracy, numbers → numeric match, short answers → EM + F1, long → ROUGE-L;
4. render the YAML with a comment on every key (``render_task_yaml``), validate it as a ``Task``, run the
   preflight on every data file, and only then write it, atomically;
5. say which ladder rungs apply (``rung_plan``, from the ladder's own registry) and what to run next.

    result = scaffold("my-task")       # my-task/eval.jsonl, my-task/docs/, my-task/train.jsonl
    result.task_file, result.report.eval_n, [r.name for r in result.rungs if r.applies]
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tailorlm.core.config import load_config, parse_yaml
from tailorlm.core.io import atomic_write_text
from tailorlm.core.task import Task
from tailorlm.data import Dataset, EvalRecord, load_dataset
from tailorlm.data.issues import IssueLog
from tailorlm.data.readers import container_for, read_rows
from tailorlm.errors import ConfigError, DataError
from tailorlm.ladder.preflight import PreflightReport, preflight

TASK_FILE = "task.yaml"
NAME = "tailor init"

# Common names, in the order they are tried. A folder holds one task, so the first match wins.
EVAL_NAMES = (
    "eval.jsonl", "eval.json", "eval.csv", "eval.tsv", "eval.parquet",
    "test.jsonl", "test.json", "test.csv", "test.tsv", "test.parquet",
)  # fmt: skip
TRAIN_NAMES = ("train.jsonl", "train.json", "train.csv", "train.tsv", "train.parquet")
PREFERENCE_NAMES = (
    "preference.jsonl", "preferences.jsonl", "prefs.jsonl", "preference.json", "preferences.json", "prefs.json",
)  # fmt: skip
DOCUMENT_NAMES = ("docs", "documents", "knowledge")

# Column names → canonical keys, most specific first. Matched case-insensitively; the first present one wins.
INPUT_COLUMNS = ("input", "question", "prompt", "query", "instruction", "text", "sentence", "problem")
REFERENCE_COLUMNS = (
    "reference", "references", "answer", "answers", "label", "output", "target", "response", "completion",
    "solution", "gold",
)  # fmt: skip
CONTEXT_COLUMNS = ("context", "passage", "document")
CATEGORY_COLUMNS = ("category", "subject", "topic", "domain", "type", "difficulty", "level")
CHAT_COLUMNS = ("messages", "conversations", "instruction")
PREFERENCE_COLUMNS = {
    "prompt": ("prompt", "question", "input", "instruction"),
    "chosen": ("chosen", "preferred", "accepted", "good"),
    "rejected": ("rejected", "dispreferred", "bad"),
}

AnswerKind = Literal["label", "number", "short", "long"]
# At most this many distinct references read as class labels; more is a QA or generation task.
MAX_LABELS = 20
# The 90th-percentile answer length, in words, up to which answers are "short" (SQuAD answers are 1-5 words).
SHORT_WORDS = 12
# Characters per token for the budget: about 4 in English prose, fewer in numbers, code and other languages. We
# budget generously because a truncated answer scores zero, while spare tokens cost nothing unless generated.
CHARS_PER_TOKEN = 3.0
MAX_NEW_TOKENS = (16, 1024)

_COMMENT_COLUMN = 40


# --- 1. finding the files ----------------------------------------------------------------------------------------


@dataclass
class TaskInputs:
    """The task folder and the data files found for it (absolute paths)."""

    directory: Path
    eval: Path
    documents: Path | None = None
    train: Path | None = None
    preference: Path | None = None
    detected: list[str] = field(default_factory=list)  # which of them were found by name, not given

    def needs(self) -> set[str]:
        """The optional data present: what the preflight checks beyond the eval set."""
        return {k for k in ("documents", "train", "preference") if getattr(self, k) is not None}


def _given(path: str | Path | None, option: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise DataError(f"{option} {path}: no such file or folder")
    return p


def _first(directory: Path, names: Iterable[str], *, folder: bool = False) -> Path | None:
    for name in names:
        p = directory / name
        if p.is_dir() if folder else p.is_file():
            return p.absolute()
    return None


def find_inputs(
    directory: str | Path,
    *,
    eval: str | Path | None = None,
    documents: str | Path | None = None,
    train: str | Path | None = None,
    preference: str | Path | None = None,
) -> TaskInputs:
    """Resolve the given paths (relative to the current directory) and look for the others inside ``directory``."""
    folder = Path(directory).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{directory} is a file; `tailor init` takes the folder that will hold {TASK_FILE}")
    exists = folder.is_dir()
    found: dict[str, Path | None] = {}
    detected = []
    for key, given, names, is_folder in (
        ("eval", eval, EVAL_NAMES, False),
        ("documents", documents, DOCUMENT_NAMES, True),
        ("train", train, TRAIN_NAMES, False),
        ("preference", preference, PREFERENCE_NAMES, False),
    ):
        path = _given(given, f"--{key}")
        if path is None and exists:
            path = _first(folder, names, folder=is_folder)
            if path is not None:
                detected.append(key)
        found[key] = path
    eval_path = found["eval"]
    if eval_path is None:
        where = f"in {directory}" if exists else f"({directory} does not exist)"
        raise DataError(
            f"no eval file {where}: looked for {', '.join(EVAL_NAMES)}",
            hint="pass --eval FILE: questions with reference answers (.jsonl, .json, .csv, .tsv or .parquet)",
        )
    if eval_path.is_dir():
        raise DataError(f"--eval {eval}: is a folder; expected a file of questions with reference answers")
    return TaskInputs(folder, eval_path, found["documents"], found["train"], found["preference"], detected)


# --- 2. columns → fields -------------------------------------------------------------------------------------------


def read_columns(path: Path, rows: int = 100) -> list[str]:
    """The column names of the first ``rows`` records, in order of appearance (empty for text or broken files).

    Uses the loaders' own readers, so a CSV header, a JSON list and JSON Lines all give their keys; problems are
    left for the loader to report with file:line when the set is loaded.
    """
    container = container_for(path)
    if container is None or container == "text":
        return []
    columns: dict[str, None] = {}
    for i, row in enumerate(read_rows(path, container, IssueLog(max_issues=0), max_record_bytes=2**62)):
        columns.update(dict.fromkeys(row.data))
        if i + 1 >= rows:
            break
    return list(columns)


def _pick(columns: Sequence[str], candidates: Sequence[str], taken: Iterable[str] = ()) -> str | None:
    by_name = {c.casefold(): c for c in reversed(columns) if c not in set(taken)}
    return next((by_name[c] for c in candidates if c in by_name), None)


def guess_fields(columns: Sequence[str]) -> dict[str, str]:
    """``{canonical key: column}`` for input, reference and context; columns already named so are left out."""
    guessed: dict[str, str] = {}
    for key, candidates in (("input", INPUT_COLUMNS), ("reference", REFERENCE_COLUMNS), ("context", CONTEXT_COLUMNS)):
        column = _pick(columns, candidates, taken=guessed.values())
        if column is not None:
            guessed[key] = column
    return guessed


def _mapping(guessed: Mapping[str, str]) -> dict[str, str]:
    # The loader needs no mapping for a column already named as the key; writing one would only add noise.
    return {k: v for k, v in guessed.items() if k != v}


# --- 3. references → metrics ---------------------------------------------------------------------------------------


@dataclass
class MetricChoice:
    """Metrics and decoding for an eval set, and why, in words for the comments and the summary."""

    kind: AnswerKind
    metrics: list[str]
    primary: str | None
    max_new_tokens: int
    stop: list[str]
    reason: str
    labels: list[str] = field(default_factory=list)


def _alternatives(reference: Any) -> list[str]:
    if reference is None:
        return []
    refs = [reference] if isinstance(reference, str) else list(reference)
    return [r for r in refs if isinstance(r, str) and r.strip()]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def _is_number(text: str) -> bool:
    from tailorlm.eval.metrics.math import extract_gsm8k_answer, parse_number

    # GSM8K references are a rationale ending in "#### 42": a number too, and the numeric metric reads them so.
    value = parse_number(text.strip())
    if value is None and (tail := extract_gsm8k_answer(text)) is not None:
        value = parse_number(tail)
    return value is not None and math.isfinite(value)


def _words(n: int) -> str:
    return f"{n} word" if n == 1 else f"{n} words"


def _token_budget(chars: float) -> int:
    """Tokens for an answer of ``chars`` characters: 1.5x headroom plus a few tokens of preamble, in steps of 16."""
    tokens = chars / CHARS_PER_TOKEN * 1.5 + 8
    low, high = MAX_NEW_TOKENS
    return int(min(high, max(low, 16 * math.ceil(tokens / 16))))


def choose_metrics(references: Sequence[Any]) -> MetricChoice:
    """Metrics from the references: class labels, numbers, short answers or long answers (checked in that order).

    Labels: every reference one short string, at most ``MAX_LABELS`` distinct values, each seen twice on average
    (so that a QA set whose answers happen to repeat is not mistaken for classification).
    """
    from tailorlm.eval.metrics import METRIC_NAMES

    alternatives = [alts for r in references if (alts := _alternatives(r))]
    if not alternatives:
        raise DataError(
            "no reference answers to choose metrics from", hint="map the answer column: --field reference=COLUMN"
        )
    n = len(alternatives)
    firsts = [alts[0].strip() for alts in alternatives]
    chars = [max(len(a) for a in alts) for alts in alternatives]
    budget = _token_budget(_percentile(chars, 0.95))
    words = [len(f.split()) for f in firsts]
    p90_words = int(_percentile(words, 0.9))

    counts = Counter(f.casefold() for f in firsts)
    single = all(len(alts) == 1 for alts in alternatives)
    if single and len(counts) <= min(MAX_LABELS, n // 2) and max(words) <= 4:
        spelling = {f.casefold(): f for f in firsts}  # the first spelling seen of each label
        labels = sorted(spelling[k] for k in counts)
        shown = ", ".join(labels[:6]) + (", …" if len(labels) > 6 else "")
        return MetricChoice(
            "label", ["accuracy"], None, budget, ["\n"], f"class labels ({len(labels)} values: {shown})", labels
        )
    if all(_is_number(f) for f in firsts):
        return MetricChoice(
            "number", ["numeric_match"], None, budget, [], "numeric answers: the number must match (a reasoning task)"
        )
    if p90_words <= SHORT_WORDS:
        return MetricChoice(
            "short",
            ["exact_match", "f1"],
            "f1",
            budget,
            ["\n"],
            f"short answers (90% have at most {_words(p90_words)})",
        )
    long_metric = "rougeL" if "rougeL" in METRIC_NAMES else "f1"
    return MetricChoice(
        "long", [long_metric], None, budget, [], f"long answers (90% have up to {_words(p90_words)}): {long_metric}"
    )


# --- the draft -------------------------------------------------------------------------------------------------------


@dataclass
class TaskDraft:
    """Everything ``task.yaml`` will say, with the facts its comments quote."""

    inputs: TaskInputs
    name: str
    eval_fields: dict[str, str]
    eval_records: int
    choice: MetricChoice
    input_template: str | None
    category_field: str | None = None
    category_values: int = 0
    train_fields: dict[str, str] = field(default_factory=dict)
    preference_fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def task_file(self) -> Path:
        return self.inputs.directory / TASK_FILE

    def path(self, p: Path) -> str:
        """``p`` as task.yaml writes it: relative to the task folder when inside it, absolute otherwise."""
        try:
            return p.absolute().relative_to(self.inputs.directory).as_posix() or "."
        except ValueError:
            return os.path.normpath(p.absolute())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "task"


def _template(choice: MetricChoice, context: bool) -> str | None:
    """A starting instruction that tells the model the answer's shape; the base rungs have no other way to know."""
    question = "{{ context }}\n\n{{ input }}" if context else "{{ input }}"
    if choice.kind == "label":
        if any(ch in label for label in choice.labels for ch in "{}%#"):
            return question if context else None  # a label that Jinja would read as syntax: no listing
        return f"{question}\n\nAnswer with one of: {', '.join(choice.labels)}."
    if choice.kind == "short":
        return f"Answer with a short phrase.\n\n{question}"
    return question if context else None


def _category(records: Sequence[EvalRecord], columns: Sequence[str]) -> tuple[str | None, int]:
    """A metadata column worth a per-category breakdown: present in (nearly) every record, 2..20 string values."""
    for column in columns:
        if column.casefold() not in CATEGORY_COLUMNS:
            continue
        values = [r.metadata.get(column) for r in records]
        present = [v for v in values if isinstance(v, str) and v.strip()]
        distinct = len(set(present))
        # Each category needs a few examples to say anything: at most half as many categories as records.
        if len(present) >= 0.9 * len(records) and 2 <= distinct <= min(MAX_LABELS, len(records) // 2):
            return column, distinct
    return None, 0


def _train_fields(path: Path, eval_fields: Mapping[str, str]) -> dict[str, str]:
    """Train columns: chat formats need no mapping; eval-style rows are mapped like the eval file (or guessed)."""
    columns = read_columns(path)
    folded = {c.casefold() for c in columns}
    if any(c in folded for c in CHAT_COLUMNS):
        return {}
    if eval_fields and all(column in columns for column in eval_fields.values()):
        return dict(eval_fields)
    guessed = guess_fields(columns)
    # An input without a guessable answer column is still mapped: the records load, and the rungs that need
    # answers say they cannot run and which column to map (check_rungs), instead of init failing on the format.
    return _mapping(guessed) if "input" in guessed else {}


def _preference_fields(path: Path) -> dict[str, str]:
    columns = read_columns(path)
    guessed: dict[str, str] = {}
    for key, candidates in PREFERENCE_COLUMNS.items():
        if (column := _pick(columns, candidates, taken=guessed.values())) is not None:
            guessed[key] = column
    return _mapping(guessed) if len(guessed) == 3 else {}


def draft_task(inputs: TaskInputs, *, name: str | None = None, fields: Mapping[str, str] | None = None) -> TaskDraft:
    """Read the eval file, map its columns (``fields`` wins over the guess), and choose metrics from its answers.

    Raises ``DataError`` when no column can serve as the input or the reference, or when the eval file does not
    load: before anything is written.
    """
    columns = read_columns(inputs.eval)
    guessed = {**guess_fields(columns), **dict(fields or {})}
    for key, names in (("input", INPUT_COLUMNS), ("reference", REFERENCE_COLUMNS)):
        if key not in guessed and columns:
            raise DataError(
                f"{inputs.eval}: cannot tell which column holds the {key}: columns {', '.join(columns)}",
                hint=f"name the column one of {', '.join(names)}, or pass --field {key}=COLUMN",
            )
    mapping = _mapping(guessed)
    options = {f"{k}_field": v for k, v in mapping.items()}
    dataset: Dataset = load_dataset(inputs.eval, kind="eval", extra="metadata", **options)  # type: ignore[arg-type]
    records: list[EvalRecord] = dataset.records
    choice = choose_metrics([r.reference for r in records])
    has_context = all(r.context for r in records)
    notes = []
    if "context" in guessed and not has_context:
        notes.append(f"some eval records have no {guessed['context']!r}: the input template leaves it out")
    category, values = _category(records, columns)
    return TaskDraft(
        inputs=inputs,
        name=name or _slug(inputs.directory.name),
        eval_fields=mapping,
        eval_records=len(records),
        choice=choice,
        input_template=_template(choice, has_context),
        category_field=category,
        category_values=values,
        train_fields=_train_fields(inputs.train, mapping) if inputs.train else {},
        preference_fields=_preference_fields(inputs.preference) if inputs.preference else {},
        notes=notes,
    )


# --- 4. the YAML -------------------------------------------------------------------------------------------------


_PLAIN = re.compile(r"[A-Za-z_./][\w./*-]*")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}


def _scalar(value: Any) -> str:
    """A YAML flow value: plain where unambiguous, else JSON (a JSON string is a valid YAML double-quoted one)."""
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS and "**" not in value
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_scalar(k)}: {_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return json.dumps(value)


def _line(text: str, comment: str) -> str:
    pad = max(_COMMENT_COLUMN - len(text), 2)
    return f"{text}{' ' * pad}# {comment}"


def _data_block(out: list[str], key: str, comment: str, path: str, path_comment: str, fields: dict[str, str]) -> None:
    out.append(_line(f"{key}:", comment))
    out.append(_line(f"  path: {_scalar(path)}", path_comment))
    if fields:
        out.append(_line(f"  fields: {_scalar(fields)}", "canonical key: your column"))


def render_task_yaml(draft: TaskDraft) -> str:
    """The commented ``task.yaml``: every key with a one-line comment, then the optional blocks, commented out."""
    inputs, choice = draft.inputs, draft.choice
    suffix = inputs.eval.suffix.lstrip(".")
    out = [
        '# What "good" means for this use case, read by `tailor ladder` and `tailor eval`. Written by `tailor init`',
        "# (edit freely; `tailor init --force` rewrites it). Keys: docs/init.md. Relative paths are resolved against",
        "# this file's folder. Next: tailor ladder task.yaml --plan",
        "",
        _line(f"name: {_scalar(draft.name)}", "short name, used in run ids and reports"),
        "# description: One sentence on the use case.   # shown in reports",
    ]
    _data_block(
        out,
        "eval",
        f"the eval set every rung is scored on ({draft.eval_records} records, {suffix})",
        draft.path(inputs.eval),
        "questions with reference answers",
        draft.eval_fields,
    )
    out.append(_line("  # limit: 100", "score only the first N records: faster, wider intervals"))
    out.append(_line("  # shuffle_seed: 0", "shuffle before `limit`, when the file is sorted"))
    if draft.input_template is not None:
        out.append(_line("input_template: |-", "the question the model sees (Jinja: input, context, your columns)"))
        out += [f"  {line}" if line else "" for line in draft.input_template.split("\n")]
    out.append(_line(f"metrics: {_scalar(choice.metrics)}", choice.reason))
    if choice.primary:
        out.append(_line(f"primary_metric: {choice.primary}", "the metric that ranks the rungs"))
    if draft.category_field:
        out.append(
            _line(
                f"category_field: {_scalar(draft.category_field)}",
                f"results per value of this column ({draft.category_values} values)",
            )
        )
    out.append(_line("generation:", "decoding for every rung (greedy)"))
    out.append(
        _line(
            f"  max_new_tokens: {choice.max_new_tokens}", "room for the longest answers (95th percentile), with slack"
        )
    )
    if choice.stop:
        out.append(_line(f"  stop: {_scalar(choice.stop)}", "answers are one line: stop at the first newline"))
    if inputs.documents is not None:
        what = "a folder, read recursively" if inputs.documents.is_dir() else "one file"
        out.append(_line("documents:", "knowledge documents for the RAG rungs"))
        out.append(_line(f"  path: {_scalar(draft.path(inputs.documents))}", what))
        out.append(_line('  include: ["**/*"]', "globs of files to read, relative to path"))
        out.append(_line("  exclude: []", 'globs of files to skip, e.g. ["drafts/**"]'))
    if inputs.train is not None:
        _data_block(
            out,
            "train",
            "training data: demonstrations, prompt search, LoRA",
            draft.path(inputs.train),
            "input + reference records, or chat records",
            draft.train_fields,
        )
    if inputs.preference is not None:
        _data_block(
            out,
            "preference",
            "preference pairs, for preference tuning",
            draft.path(inputs.preference),
            "prompt, chosen, rejected",
            draft.preference_fields,
        )
    out += [
        "",
        "# --- optional: uncomment to use ---------------------------------------------------------------------------",
        _line("# canaries:", "general-capability checks that catch forgetting"),
        _line("#   enabled: true", "score them for every System"),
        _line("#   max_drop: 0.05", "largest accuracy drop vs the base model"),
        _line("# budgets:", "limits a deployment must meet; reports flag Systems beyond them"),
        _line("#   latency_p50_s: 2.0", "median seconds per answer"),
        _line("#   memory_gb: 8", "peak resident memory"),
        _line("#   time_minutes: 60", "wall-clock budget for building a System"),
        _line("# bootstrap: {resamples: 1000, confidence: 0.95}", "confidence intervals of every metric"),
        _line("# seed: 0", "shuffles, bootstrap resampling and sampling"),
    ]
    return "\n".join(out) + "\n"


def task_from_text(text: str, task_file: Path) -> Task:
    """Validate ``text`` as the Task it would be at ``task_file``, without writing it."""
    data = parse_yaml(text, source=str(task_file))
    return load_config(Task, base={**data, "base_dir": os.path.normpath(task_file.parent.absolute())})


# --- 5. rungs ----------------------------------------------------------------------------------------------------


@dataclass
class RungPlan:
    name: str
    title: str
    applies: bool  # it runs: the task's data has what it needs, and its data builds
    reason: str | None  # why it does not run
    fix: str | None = None  # what to change so that it runs


def rung_plan(task: Task) -> list[RungPlan]:
    """Every ladder rung, in ladder order, and whether it will run: the ladder's preflight decides (``check_rungs``
    builds each rung's data without a model), so init's "runs" is what the ladder will do."""
    from tailorlm.ladder.preflight import check_rungs

    return [RungPlan(c.name, c.title, c.runs, c.reason, c.fix) for c in check_rungs(task)]


# --- all of it ---------------------------------------------------------------------------------------------------


@dataclass
class ScaffoldResult:
    task_file: Path
    task: Task
    draft: TaskDraft
    report: PreflightReport
    rungs: list[RungPlan]
    text: str

    @property
    def notes(self) -> list[str]:
        return [*self.draft.notes, *self.report.notes]

    def next_command(self, directory: str | Path) -> str:
        return f"tailor ladder {shlex.quote(str(Path(directory) / TASK_FILE))} --plan"

    def to_dict(self, directory: str | Path) -> dict[str, Any]:
        return {
            "task_file": str(self.task_file),
            "task": parse_yaml(self.text, source=str(self.task_file)),  # the keys as written
            "answers": self.draft.choice.kind,
            "metrics_reason": self.draft.choice.reason,
            "preflight": self.report.model_dump(mode="json"),
            "notes": self.notes,
            "rungs": [vars(r) for r in self.rungs],
            "next": self.next_command(directory),
        }


def scaffold(
    directory: str | Path,
    *,
    eval: str | Path | None = None,
    documents: str | Path | None = None,
    train: str | Path | None = None,
    preference: str | Path | None = None,
    name: str | None = None,
    fields: Mapping[str, str] | None = None,
    force: bool = False,
) -> ScaffoldResult:
    """Write ``directory/task.yaml`` for the data found, after validating it and preflighting every file.

    Nothing is written when anything fails: an existing task.yaml (without ``force``), an eval file whose columns
    cannot be mapped, a record that does not load, an empty documents folder.
    """
    task_file = Path(directory).expanduser().absolute() / TASK_FILE
    if task_file.exists() and not force:
        raise ConfigError(
            f"{task_file} already exists; not overwriting it", hint="pass --force to replace it, or edit it instead"
        )
    inputs = find_inputs(directory, eval=eval, documents=documents, train=train, preference=preference)
    draft = draft_task(inputs, name=name, fields=fields)
    text = render_task_yaml(draft)
    task = task_from_text(text, task_file)
    try:
        report = preflight(task, inputs.needs(), task_file=task_file)
    except (DataError, ConfigError) as err:
        # The messages name task.yaml keys, but the file does not exist yet: say so, and how to go on.
        err.hint = f"{err.hint}; " if err.hint else ""
        err.hint += f"nothing was written: fix the data (or map columns with --field KEY=COLUMN) and run {NAME} again"
        raise
    atomic_write_text(task_file, text)
    task = Task.load(task_file)  # what the ladder will read: the file, not our in-memory copy
    return ScaffoldResult(task_file, task, draft, report, rung_plan(task), text)
