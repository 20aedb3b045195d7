"""Content keys for rungs: a rung is reused when its key is unchanged, rebuilt when anything it depends on changed.

A key hashes what determines the rung's result and nothing else:
- the task's eval definition (eval spec, template, metrics, decoding, seed, canaries) and the model;
- the ladder settings the rung reads (``Rung.config_keys``), so changing RAG's ``top_k`` leaves LoRA cached;
- the bytes of the data files it reads (eval always; training data and documents when it uses them);
- the code: tailorlm's source files and the versions of the libraries that compute the answers.

Hashing source files, not a version string, means an edited checkout rebuilds what it may have changed; the cost
is that any edit to tailorlm rebuilds every rung, which errs on the side of never serving a stale result.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from tailorlm.core.environment import TRACKED_PACKAGES
from tailorlm.core.io import sha256_file
from tailorlm.core.task import Task

# Libraries whose version can change an answer or a trained adapter: the list run.json records, one source of truth
# (tailorlm itself is covered by hashing its source files below).
_LIBRARIES = tuple(name for name in TRACKED_PACKAGES if name != "tailorlm")


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 over tailorlm's source files and the answer-relevant library versions."""
    from importlib.metadata import PackageNotFoundError, version

    import tailorlm

    root = Path(tailorlm.__file__).parent
    h = hashlib.sha256(tailorlm.__version__.encode())
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".jinja", ".jsonl", ".yaml") and "__pycache__" not in path.parts:
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    for lib in _LIBRARIES:
        try:
            h.update(f"{lib}={version(lib)}".encode())
        except PackageNotFoundError:
            h.update(f"{lib}=-".encode())
    return h.hexdigest()


def path_fingerprint(path: Path, include: list[str] | None = None, exclude: list[str] | None = None) -> str:
    """sha256 of a file's bytes, or of every (relative path, bytes) under a folder that the globs select."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return "missing"
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if include:
        files = [p for p in files if any(p.relative_to(path).match(g) or _glob_all(g) for g in include)]
    if exclude:
        files = [p for p in files if not any(p.relative_to(path).match(g) for g in exclude)]
    return _sha([(p.relative_to(path).as_posix(), sha256_file(p)) for p in files])


def _glob_all(pattern: str) -> bool:
    return pattern in ("**/*", "*", "**")


def data_fingerprints(task: Task, uses: set[str]) -> dict[str, str]:
    """Fingerprints of the eval file and of the training data / documents when ``uses`` names them."""
    out = {"eval": path_fingerprint(task.resolve(task.eval.path))}
    if "train" in uses and task.train is not None:
        out["train"] = path_fingerprint(task.resolve(task.train.path))
    if "documents" in uses and task.documents is not None:
        docs = task.documents
        out["documents"] = path_fingerprint(task.resolve(docs.path), docs.include, docs.exclude)
    if "preference" in uses and task.preference is not None:
        out["preference"] = path_fingerprint(task.resolve(task.preference.path))
    return out


def rung_key(task: Task, rung: str, model: str, config_keys: tuple[str, ...], uses: set[str]) -> str:
    """The content key of ``rung`` on ``task``: equal keys mean an equal result."""
    ladder = task.ladder.model_dump(mode="json")
    if "documents" in uses and task.train is not None and task.ladder.rag.tune:
        uses = uses | {"train"}  # the index is tuned on the training questions: they decide what is retrieved
    content = {
        "rung": rung,
        "model": model,
        "task": task.model_dump(
            mode="json",
            include={"eval", "input_template", "metrics", "primary_metric", "generation", "seed", "canaries"}
            | ({"train"} if "train" in uses else set())
            | ({"documents"} if "documents" in uses else set()),
        ),
        "ladder": {k: ladder[k] for k in ("eval_limit", "batch_size", "canary_limit", *config_keys)},
        # Which engine answers changes the answers' bits (and the cost): a result from another engine is stale.
        "engine": [ladder["engine"], ladder["engine_options"], os.environ.get("TAILOR_ENGINE", "")],
        "data": data_fingerprints(task, uses),
        "code": code_version(),
    }
    return _sha(content)
