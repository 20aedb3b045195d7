"""Forgetting canaries: a small built-in general-capability suite, run before and after tailoring a model.

Fine-tuning on one use case can erode what the model knew before ("catastrophic forgetting"). The canaries are
300 multiple-choice questions from MMLU, ARC and BoolQ (see ``docs/canaries.md`` and ``data/CANARIES_LICENSE.md``),
scored by log-likelihood with length-normalised accuracy (lm-evaluation-harness's ``acc_norm``), so that they
need no generation and run in a few minutes on a 2-core CPU with the 135M default model. A Task sets
``max_drop``; a System whose canary score falls by more than that is not promotable.

The packaged file is rebuilt deterministically by ``scripts/build_canaries.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from tailorlm.errors import ConfigError, DataError
from tailorlm.eval.loglik import multiple_choice

PACKAGED = "data/canaries.jsonl"  # relative to the tailorlm.eval package
_REQUIRED = {"id": str, "source": str, "context": str, "choices": list, "answer": int}


def _validate(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key, kind in _REQUIRED.items():
        if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
            raise DataError(f"{where}: field {key!r} must be a {kind.__name__}, got {row.get(key)!r}")
    choices = row["choices"]
    if len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{where}: field 'choices' must hold at least two strings")
    if not 0 <= row["answer"] < len(choices):
        raise DataError(f"{where}: field 'answer' is {row['answer']}, not an index into {len(choices)} choices")
    return row


def _round_robin(items: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    # A limit takes items from each source in turn, so that a short run (a smoke test, --limit 20) still
    # covers every source instead of only the first one in the file.
    by_source: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        by_source.setdefault(it["source"], []).append(it)
    queues = list(by_source.values())
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < limit and any(depth < len(q) for q in queues):
        out.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return out[:limit]


def load_canaries(path: str | Path | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The canary items: the packaged set, or a JSONL file of the same shape at ``path``.

    Each row is ``{"id", "source", "context", "choices", "answer", "subject"?}``. A malformed row is a
    ``DataError`` naming the file, line and field. ``limit`` keeps that many items, drawn from the sources in turn.
    """
    if path is None:
        where = f"tailorlm/eval/{PACKAGED}"
        text = resources.files("tailorlm.eval").joinpath(PACKAGED).read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise DataError(f"cannot read canary file {where}: {err}") from err
    items: list[dict[str, Any]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}:{line_no}: invalid JSON ({err.msg})") from err
        items.append(_validate(row, f"{where}:{line_no}"))
    if not items:
        raise DataError(f"canary file {where} holds no items")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"canary limit must be >= 1, got {limit}")
        items = _round_robin(items, limit)
    return items


def run_canaries(
    model: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]], batch_size: int = 16
) -> dict[str, Any]:
    """Score ``items`` (from ``load_canaries``) and return the overall and per-source accuracy.

    ``score`` is the mean ``acc_norm`` over all items (so a source weighs by its item count); ``accuracy`` is the
    unnormalised ``acc`` for reference. ``per_item`` keeps each item's prediction for reports and paired tests.
    """
    if not items:
        raise DataError("no canary items to run")
    start = time.perf_counter()
    questions = [{"context": it["context"], "choices": list(it["choices"]), "answer": it["answer"]} for it in items]
    result = multiple_choice(model, tokenizer, questions, normalize="acc_norm", batch_size=batch_size)

    per_item: list[dict[str, Any]] = []
    by_source: dict[str, dict[str, Any]] = {}
    for it, scored in zip(items, result["per_item"], strict=True):
        per_item.append(
            {
                "id": it["id"],
                "source": it["source"],
                "pred": scored["pred_norm"],
                "answer": scored["answer"],
                "correct": scored["pred_norm"] == scored["answer"],
                "correct_raw": scored["pred_raw"] == scored["answer"],
            }
        )
        src = by_source.setdefault(it["source"], {"n": 0, "correct": 0, "correct_raw": 0})
        src["n"] += 1
        src["correct"] += per_item[-1]["correct"]
        src["correct_raw"] += per_item[-1]["correct_raw"]
    return {
        "score": result["accuracy_norm"],
        "accuracy": result["accuracy"],
        "by_source": {
            name: {"score": s["correct"] / s["n"], "accuracy": s["correct_raw"] / s["n"], "n": s["n"]}
            for name, s in sorted(by_source.items())
        },
        "n": len(per_item),
        "seconds": time.perf_counter() - start,
        "per_item": per_item,
    }


def _score(value: float | Mapping[str, Any], name: str) -> float:
    if isinstance(value, Mapping):
        if "score" not in value:
            raise ValueError(f"{name} is a mapping without a 'score' (pass a run_canaries result or a float)")
        value = value["score"]
    return float(value)


def compare_canaries(
    before: float | Mapping[str, Any], after: float | Mapping[str, Any], max_drop: float | None
) -> dict[str, Any]:
    """Did the canary score fall by more than the Task allows?

    ``before`` / ``after`` are scores in [0, 1] or ``run_canaries`` results. ``drop = before - after`` in absolute
    accuracy (0.02 is two points); a gain is a negative drop. ``promotable`` is ``drop <= max_drop``; with
    ``max_drop=None`` the check is off and every System is promotable, but the drop is still reported. When both
    sides are full results, ``by_source`` holds each source's drop too, to show where the forgetting happened.
    """
    if max_drop is not None and not 0 <= max_drop <= 1:
        raise ConfigError(f"canary max_drop must be in [0, 1] (accuracy points as a fraction), got {max_drop}")
    b, a = _score(before, "before"), _score(after, "after")
    drop = b - a
    # A tolerance, so that a drop of exactly max_drop computed in floating point (0.45 - 0.40) still passes.
    out: dict[str, Any] = {
        "before": b,
        "after": a,
        "drop": drop,
        "max_drop": max_drop,
        "promotable": max_drop is None or drop <= max_drop + 1e-9,
    }
    if isinstance(before, Mapping) and isinstance(after, Mapping) and "by_source" in before and "by_source" in after:
        out["by_source"] = {
            src: before["by_source"][src]["score"] - after["by_source"][src]["score"]
            for src in sorted(set(before["by_source"]) & set(after["by_source"]))
        }
    return out
