"""Prediction cache: re-running an unchanged evaluation costs nothing, and a killed one resumes.

Predictions are appended to one JSON Lines file per System (keyed by the System's content and the weights it
points at) and fsynced after every chunk. A process killed mid-write leaves at most one torn last line, which
the reader skips, so whatever reached the disk is reused and only the missing examples are generated again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tailorlm.core.io import append_text
from tailorlm.core.system import System, is_local_spec

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def _stamp(path: str) -> list[Any]:
    """Size and mtime of the weight files under a local model/adapter folder: a retrained adapter at the same
    path must not be served stale predictions."""
    root = Path(path)
    if not root.exists():
        return []
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def system_cache_key(system: System, engine: dict[str, Any] | None = None) -> str:
    """The System's fingerprint, a stamp of the local weights it loads, and the engine ``auto`` resolved to.

    ``engine`` (``EngineChoice.settings`` plus its name) keeps answers of two engines apart; a System that names
    its engine (hf, openai) keys as it always did.
    """
    stamps = {}
    for spec in [system.model, *(a.path for a in system.adapters)]:
        if is_local_spec(spec):
            stamps[spec] = _stamp(spec)
    content: dict[str, Any] = {"system": system.fingerprint(), "weights": stamps}
    if engine is not None and system.engine in ("auto", "ct2"):
        content["engine"] = engine
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def example_key(messages: list[dict[str, Any]] | dict[str, Any], params: dict[str, Any]) -> str:
    """What the model is asked and how it decodes: identical keys give identical greedy answers."""
    payload = json.dumps({"messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class PredictionCache:
    """Append-only JSONL of ``{"key": ..., "completion": {...}}`` records for one System."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_system(cls, cache_dir: Path, system: System, engine: dict[str, Any] | None = None) -> PredictionCache:
        return cls(cache_dir / "predictions" / f"{system_cache_key(system, engine)}.jsonl")

    def load(self) -> dict[str, dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return entries
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    entries[row["key"]] = row["completion"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line from a killed writer: regenerate that example
        return entries

    def append(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        lines = "".join(json.dumps({"key": k, "completion": c}, ensure_ascii=False) + "\n" for k, c in items)
        if not lines:
            return
        # fsynced per chunk; a torn tail left by a killed writer is ended first so it cannot swallow a new record.
        append_text(self.path, lines, fsync=True)
