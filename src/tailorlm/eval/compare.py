"""Compare two evaluation runs on the examples they share: per-metric difference, CI and p-value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailorlm.core.run import RunInfo, load_run
from tailorlm.errors import RunError
from tailorlm.eval.metrics import get_metric
from tailorlm.eval.stats import compare_metric, paired_bootstrap, paired_permutation_test


def read_predictions(run: RunInfo) -> list[dict[str, Any]]:
    path = Path(run.path) / "predictions.jsonl"
    if not path.is_file():
        raise RunError(f"{run.id} has no predictions.jsonl", hint="compare evaluation runs (`tailor eval …`)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            raise RunError(f"{path}:{n}: malformed prediction line: {err}") from err
    return rows


def read_metrics(run: RunInfo) -> dict[str, Any]:
    path = Path(run.path) / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: cannot read eval metrics ({err})") from err


def compare_eval_runs(
    ref_a: str | Path, ref_b: str | Path, *, root: str | Path = "runs", n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Difference B − A for every metric both runs report, paired over shared example ids."""
    run_a, run_b = load_run(ref_a, root), load_run(ref_b, root)
    preds_a = {r["id"]: r for r in read_predictions(run_a)}
    preds_b = {r["id"]: r for r in read_predictions(run_b)}
    shared = [i for i in preds_a if i in preds_b]
    if not shared:
        raise RunError(f"runs {run_a.id} and {run_b.id} share no example ids: they are not on the same eval set")
    metrics_a, metrics_b = read_metrics(run_a)["metrics"], read_metrics(run_b)["metrics"]
    rows = []
    for name in [m for m in metrics_a if m in metrics_b]:
        metric = get_metric(name)
        if metric.per_example is not None:
            a = [preds_a[i]["scores"][name] for i in shared]
            b = [preds_b[i]["scores"][name] for i in shared]
            stats = paired_bootstrap(b, a, n_resamples=n_resamples, seed=seed)  # A − B of (b, a) is B − A
            p_perm = paired_permutation_test(b, a, seed=seed)
            value_a, value_b = sum(a) / len(a), sum(b) / len(b)
        else:
            refs = [preds_a[i]["reference"] for i in shared]
            pa = [preds_a[i]["prediction"] for i in shared]
            pb = [preds_b[i]["prediction"] for i in shared]
            stats = compare_metric(metric, pb, pa, refs, n_resamples=n_resamples, seed=seed)  # B − A, as above
            p_perm = None
            value_a, value_b = metric.corpus(pa, refs), metric.corpus(pb, refs)
        rows.append(
            {
                "metric": name,
                "a": value_a,
                "b": value_b,
                "diff": stats["diff"],
                "low": stats["low"],
                "high": stats["high"],
                "p_value": stats["p_value"],
                "p_permutation": p_perm,
                "higher_is_better": metric.higher_is_better,
            }
        )
    return {"a": run_a.id, "b": run_b.id, "n_shared": len(shared), "metrics": rows}
