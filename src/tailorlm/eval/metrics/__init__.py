"""The metric registry: a metric name in ``task.yaml`` → a :class:`Metric` that scores predictions.

A metric is either

- **per-example**: ``per_example(prediction, reference, example) -> float``; the score is the mean over examples,
  and the per-example scores feed the bootstrap directly (EM, F1, accuracy, ROUGE, numeric match, JSON checks); or
- **corpus**: ``corpus(predictions, references) -> float``; the score is not a mean of per-example scores (BLEU
  pools n-gram counts, macro-F1 averages over classes), so the bootstrap resamples examples and recomputes it.

``reference`` is what an eval record holds: a string, a list of acceptable strings, or ``None``. ``example`` is the
record as a dict (``input``, ``reference``, ``context``, ``metadata``); metrics read per-example settings such as
``metadata["labels"]`` or ``metadata["schema"]`` from it. Every score is "higher is better" except where
``higher_is_better`` says otherwise.

Adding a metric: write a pure function in a module here, with its reference and a hand-computed test, then add a
builder to ``_BUILDERS``.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tailorlm.errors import ConfigError, DataError
from tailorlm.eval.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    micro_f1,
    normalize_label,
    per_class,
)
from tailorlm.eval.metrics.cost import summarize_latency, summarize_tokens, tokens_per_second
from tailorlm.eval.metrics.math import extract_gsm8k_answer, extract_last_number, numeric_match, parse_number
from tailorlm.eval.metrics.qa import contains_answer, exact_match, normalize_answer, token_f1
from tailorlm.eval.metrics.structured import extract_json, json_schema_valid, json_valid
from tailorlm.eval.metrics.text import SacrebleuCorpus, bleu, chrf, perplexity_from_nll, rouge, rouge_mean
from tailorlm.eval.metrics.tool_calls import ASTResult, ast_match, tool_ast, tool_ast_result, tool_call_valid

Reference = str | list[str] | None
PerExampleFn = Callable[[str, Reference, dict[str, Any]], float]
CorpusFn = Callable[[list[str], list[Reference]], float]


@dataclass(frozen=True)
class Metric:
    """A named metric. Exactly one of ``per_example`` and ``corpus`` is set."""

    name: str
    higher_is_better: bool = True
    per_example: PerExampleFn | None = None
    corpus: CorpusFn | None = None
    needs_reference: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if (self.per_example is None) == (self.corpus is None):
            raise ValueError(f"metric {self.name!r} needs exactly one of per_example and corpus")

    def scores(
        self, predictions: Sequence[str], references: Sequence[Reference], examples: Sequence[Mapping] | None = None
    ) -> list[float]:
        """Per-example scores; only for per-example metrics."""
        if self.per_example is None:
            raise ValueError(f"{self.name} is a corpus metric: it has no per-example scores")
        refs, exs = _check_inputs(self, predictions, references, examples)
        scores = []
        for i, (p, r, e) in enumerate(zip(predictions, refs, exs, strict=True)):
            try:
                scores.append(self.per_example(p, r, e))
            except ValueError as err:  # e.g. numeric_match on a reference with no number: the data's problem
                raise DataError(f"metric {self.name}: example {i}: {err}") from None
        return scores

    def score(
        self, predictions: Sequence[str], references: Sequence[Reference], examples: Sequence[Mapping] | None = None
    ) -> float:
        """The metric over the whole set: the mean of per-example scores, or the corpus function."""
        if self.corpus is not None:
            refs, _ = _check_inputs(self, predictions, references, examples)
            return float(self.corpus(list(predictions), refs))
        scores = self.scores(predictions, references, examples)
        return sum(scores) / len(scores)


def _check_inputs(
    metric: Metric, predictions: Sequence[str], references: Sequence[Reference], examples: Sequence[Mapping] | None
) -> tuple[list[Reference], list[dict[str, Any]]]:
    n = len(predictions)
    if n == 0:
        raise DataError(f"metric {metric.name}: no predictions to score")
    if len(references) != n:
        raise DataError(f"metric {metric.name}: {n} predictions but {len(references)} references")
    exs = [dict(e) for e in examples] if examples is not None else [{} for _ in range(n)]
    if len(exs) != n:
        raise DataError(f"metric {metric.name}: {n} predictions but {len(exs)} examples")
    if metric.needs_reference:
        missing = [i for i, r in enumerate(references) if r is None or (not isinstance(r, str) and not list(r))]
        if missing:
            raise DataError(
                f"metric {metric.name} needs a reference answer, but {len(missing)} example(s) have none "
                f"(first at index {missing[0]})"
            )
    return list(references), exs


# ---- builders: options (from task.yaml) → Metric --------------------------------------------------------------

_STRIP = string.whitespace + string.punctuation


def _refs_list(ref: Reference) -> list[str]:
    return [] if ref is None else [ref] if isinstance(ref, str) else list(ref)


def _metadata(example: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = example.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _single_label(ref: Reference, metric: str) -> str:
    refs = _refs_list(ref)
    if len(refs) != 1:
        raise DataError(f"metric {metric}: a classification reference must be one label, got {ref!r}")
    return refs[0]


def _build_accuracy(labels: list[str] | None = None) -> Metric:
    def score(pred: str, ref: Reference, example: dict[str, Any]) -> float:
        names = labels or _metadata(example).get("labels")
        gold = {r.strip(_STRIP).casefold() for r in _refs_list(ref)}
        if names:
            # A known label set: map the generation to a label first ("Sentiment: positive." → "positive").
            got = normalize_label(pred, names)
            return float(got is not None and got.strip(_STRIP).casefold() in gold)
        return float(pred.strip(_STRIP).casefold() in gold)

    return Metric("accuracy", per_example=score, description="fraction of predictions equal to the label")


def _build_f1(kind: str, labels: list[str] | None = None) -> Metric:
    fn = macro_f1 if kind == "macro_f1" else micro_f1

    def corpus(preds: list[str], refs: list[Reference]) -> float:
        gold = [_single_label(r, kind) for r in refs]
        names = labels or sorted(set(gold))
        # References are canonicalized to the label spelling case-insensitively; predictions are mapped with
        # normalize_label, so free text that names no label becomes None (an error for every class).
        canon = {n.casefold(): n for n in names}
        gold = [canon.get(g.casefold(), g) for g in gold]
        return fn([normalize_label(p, names) for p in preds], gold, names)

    return Metric(kind, corpus=corpus, description=f"{kind.replace('_', '-')} over the label set")


def _build_numeric(tol: float = 1e-6) -> Metric:
    def score(pred: str, ref: Reference, example: dict[str, Any]) -> float:
        return max(numeric_match(pred, r, tol=tol) for r in _refs_list(ref))

    return Metric("numeric_match", per_example=score, description="last number (or '#### N') equals the reference")


def _build_json_schema(schema: dict[str, Any] | None = None) -> Metric:
    def score(pred: str, ref: Reference, example: dict[str, Any]) -> float:
        meta = _metadata(example)
        sch = schema if schema is not None else meta.get("schema", meta.get("json_schema"))
        if not isinstance(sch, dict):
            raise ConfigError(
                "the json_schema metric needs a schema",
                hint="set metric option `schema`, or put the schema in each example's metadata.schema",
            )
        return json_schema_valid(pred, sch)

    return Metric(
        "json_schema", per_example=score, needs_reference=False, description="output validates against the schema"
    )


def _rouge_metric(kind: str) -> Callable[[], Metric]:
    return lambda: Metric(
        kind,
        per_example=lambda p, r, e: rouge(p, _refs_list(r), kind),  # type: ignore[arg-type]
        description=f"{kind} F-measure (rouge-score, stemmed), best reference",
    )


_BUILDERS: dict[str, Callable[..., Metric]] = {
    "exact_match": lambda: Metric(
        "exact_match",
        per_example=lambda p, r, e: exact_match(p, _refs_list(r)),
        description="SQuAD exact match after normalization",
    ),
    "f1": lambda: Metric(
        "f1", per_example=lambda p, r, e: token_f1(p, _refs_list(r)), description="SQuAD token F1, best reference"
    ),
    "contains_answer": lambda: Metric(
        "contains_answer",
        per_example=lambda p, r, e: contains_answer(p, _refs_list(r)),
        description="a reference appears as whole words in the prediction (lenient QA match)",
    ),
    "accuracy": _build_accuracy,
    "macro_f1": lambda labels=None: _build_f1("macro_f1", labels),
    "micro_f1": lambda labels=None: _build_f1("micro_f1", labels),
    # SacrebleuCorpus instances, not lambdas: they carry sufficient statistics that make the bootstrap fast.
    "bleu": lambda: Metric("bleu", corpus=SacrebleuCorpus("bleu"), description="sacrebleu corpus BLEU, 0-100"),
    "chrf": lambda: Metric("chrf", corpus=SacrebleuCorpus("chrf"), description="sacrebleu corpus chrF, 0-100"),
    "rouge1": _rouge_metric("rouge1"),
    "rouge2": _rouge_metric("rouge2"),
    "rougeL": _rouge_metric("rougeL"),
    "numeric_match": _build_numeric,
    "json_valid": lambda: Metric(
        "json_valid",
        per_example=lambda p, r, e: json_valid(p),
        needs_reference=False,
        description="output parses as JSON (whole text or first fenced block)",
    ),
    "json_schema": _build_json_schema,
    # Tool calls read metadata.tools and metadata.ground_truth (BFCL's possible answers; tailorlm.data.bfcl).
    "tool_ast": lambda: Metric(
        "tool_ast",
        per_example=tool_ast,
        needs_reference=False,
        description="BFCL AST match of the tool calls against the possible answers (irrelevance: no call)",
    ),
    "tool_call_valid": lambda: Metric(
        "tool_call_valid",
        per_example=tool_call_valid,
        needs_reference=False,
        description="every tool call names a given tool and its arguments validate against the tool's schema",
    ),
}

# The options each metric accepts, with their types: anything else in task.yaml is a mistake worth reporting.
_OPTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "accuracy": {"labels": list},
    "macro_f1": {"labels": list},
    "micro_f1": {"labels": list},
    "numeric_match": {"tol": (int, float)},
    "json_schema": {"schema": dict},
}

METRIC_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def get_metric(name: str, options: Mapping[str, Any] | None = None) -> Metric:
    """The metric called ``name``, configured with ``options``; ``ConfigError`` names the valid choices."""
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, METRIC_NAMES, n=1, cutoff=0.5)
        raise ConfigError(
            f"unknown metric {name!r}; valid metrics: {', '.join(METRIC_NAMES)}",
            hint=f"did you mean {close[0]!r}?" if close else None,
        )
    opts = dict(options or {})
    allowed = _OPTIONS.get(name, {})
    for key, value in opts.items():
        if key not in allowed:
            valid = ", ".join(allowed) or "none"
            raise ConfigError(f"metric {name!r} has no option {key!r} (its options: {valid})")
        if not isinstance(value, allowed[key]) or isinstance(value, bool):
            raise ConfigError(f"metric {name!r} option {key!r} has the wrong type: {type(value).__name__}")
        if key == "labels" and (not value or not all(isinstance(v, str) for v in value)):
            raise ConfigError(f"metric {name!r} option 'labels' must be a non-empty list of label names (strings)")
    return _BUILDERS[name](**opts)


def _resolve(name: str | Metric, options: Mapping[str, Mapping[str, Any]] | None) -> Metric:
    return name if isinstance(name, Metric) else get_metric(name, (options or {}).get(name))


def compute_metrics(
    names: Sequence[str | Metric],
    predictions: Sequence[str],
    references: Sequence[Reference],
    examples: Sequence[Mapping[str, Any]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, float]:
    """``{metric name: score}`` for each metric. ``options`` maps a metric name to its options."""
    metrics = [_resolve(n, options) for n in names]
    return {m.name: m.score(predictions, references, examples) for m in metrics}


def per_example_scores(
    names: Sequence[str | Metric],
    predictions: Sequence[str],
    references: Sequence[Reference],
    examples: Sequence[Mapping[str, Any]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[float]]:
    """``{metric name: [score per example]}`` for the per-example metrics among ``names``.

    Corpus metrics (BLEU, chrF, macro/micro-F1) have no per-example score and are left out; bootstrap them with
    :func:`tailorlm.eval.stats.bootstrap_metric`.
    """
    metrics = [_resolve(n, options) for n in names]
    return {m.name: m.scores(predictions, references, examples) for m in metrics if m.per_example is not None}


__all__ = [
    "METRIC_NAMES",
    "ASTResult",
    "CorpusFn",
    "Metric",
    "PerExampleFn",
    "Reference",
    "SacrebleuCorpus",
    "accuracy",
    "ast_match",
    "bleu",
    "chrf",
    "classification_report",
    "compute_metrics",
    "confusion_matrix",
    "contains_answer",
    "exact_match",
    "extract_gsm8k_answer",
    "extract_json",
    "extract_last_number",
    "get_metric",
    "json_schema_valid",
    "json_valid",
    "macro_f1",
    "micro_f1",
    "normalize_answer",
    "normalize_label",
    "numeric_match",
    "parse_number",
    "per_class",
    "per_example_scores",
    "perplexity_from_nll",
    "rouge",
    "rouge_mean",
    "summarize_latency",
    "summarize_tokens",
    "token_f1",
    "tokens_per_second",
    "tool_ast",
    "tool_ast_result",
    "tool_call_valid",
]
