"""Score the forgetting canaries for an evaluated System, and its base model for comparison.

"Before" is the System's base model with its adapters switched off; "after" is the System itself. Canaries are
scored by log-likelihood on the model's weights, so prompt programs do not affect them; a System without
adapters is its own base and reports a drop of zero. Results are cached per weights, like predictions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tailorlm.core.io import atomic_write_json
from tailorlm.core.system import LOCAL_ENGINES, System
from tailorlm.core.task import CanarySpec
from tailorlm.eval.cache import system_cache_key
from tailorlm.eval.canaries import compare_canaries, load_canaries, run_canaries


def _weights_only(system: System, *, with_adapters: bool) -> System:
    # Canary scores depend only on the weights: strip everything else so equal weights share one cache entry.
    return System(model=system.model, adapters=system.adapters if with_adapters else [], engine="hf")


def _cached_score(cache_dir: Path, system: System, limit: int | None, compute: Any) -> dict[str, Any]:
    path = cache_dir / "canaries" / f"{system_cache_key(system)}-{limit or 'all'}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass  # a corrupt entry is recomputed
    result = compute()
    summary = {k: result[k] for k in ("score", "accuracy", "by_source", "n", "seconds")}
    atomic_write_json(path, summary)
    return summary


def check_canaries(
    spec: CanarySpec, system: System, get_engine: Callable[[], Any], cache_dir: Path
) -> dict[str, Any] | None:
    """The ``canaries`` block of metrics.json, or None when the task does not ask for canaries.

    ``get_engine`` is called only when a score is not cached yet.
    """
    if not spec.enabled:
        return None
    if system.engine not in LOCAL_ENGINES:
        return {"skipped": f"the {system.engine} engine exposes no local weights to score canaries on"}
    items = load_canaries(limit=spec.limit)
    torch_engines: list[Any] = []

    def torch_engine() -> Any:
        # Canaries are log-likelihoods of the weights, scored with torch: a ct2 eval engine has no torch model.
        engine = get_engine()
        if hasattr(engine, "model"):
            return engine
        if not torch_engines:
            from tailorlm.models.build import build_engine

            torch_engines.append(build_engine(system.model_copy(update={"engine": "hf"}), device="cpu"))
        return torch_engines[0]

    def score(adapters_on: bool) -> dict[str, Any]:
        engine = torch_engine()
        # PeftModel.disable_adapter() runs the base weights without unloading anything.
        disable = None if adapters_on else getattr(engine.model, "disable_adapter", None)
        with disable() if disable else nullcontext():
            return run_canaries(engine.model, engine.tokenizer, items)

    after = _cached_score(cache_dir, _weights_only(system, with_adapters=True), spec.limit, lambda: score(True))
    if not system.adapters:
        return compare_canaries(after, after, spec.max_drop)
    before = _cached_score(cache_dir, _weights_only(system, with_adapters=False), spec.limit, lambda: score(False))
    return compare_canaries(before, after, spec.max_drop)


def compare_systems(spec: CanarySpec, before: System, after: System, cache_dir: Path) -> dict[str, Any]:
    """Canaries of two Systems' weights (e.g. a base model and its fine-tune, adapters or a new full model)."""
    from tailorlm.models.build import build_engine

    items = load_canaries(limit=spec.limit)

    def score(system: System) -> dict[str, Any]:
        weights = _weights_only(system, with_adapters=True)

        def compute() -> dict[str, Any]:
            engine = build_engine(weights, device="cpu")
            return run_canaries(engine.model, engine.tokenizer, items)

        return _cached_score(cache_dir, weights, spec.limit, compute)

    return compare_canaries(score(before), score(after), spec.max_drop)
