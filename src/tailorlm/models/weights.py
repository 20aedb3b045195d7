"""Weights load from safetensors only, unless the user says they trust a pickle checkpoint.

A ``pytorch_model.bin`` / ``adapter_model.bin`` is a Python pickle: unpickling can run arbitrary code. transformers,
PEFT and sentence-transformers all fall back to such a file when a folder has no ``*.safetensors``. They read it
with ``torch.load(weights_only=True)`` (torch ≥ 2.6 restricts unpickling to tensors and plain containers), which
closes the known attacks, but that restricted unpickler is still a parser of untrusted bytes with a history of
bypasses, and the safetensors format has no code path to exploit at all. So a folder whose only weights are pickles
is refused with a message that says how to convert it, and ``TAILOR_ALLOW_PICKLE=1`` lets a user who trusts the file
load it anyway.

Only the files a loader would read *as weights* count: a Trainer checkpoint's ``optimizer.pt``, ``scheduler.pt``,
``rng_state.pth`` are also pickles, but the Trainer reads them with ``weights_only=True`` and we wrote them ourselves
(``docs/install.md`` says more); ``training_args.bin`` is never read back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tailorlm.errors import ConfigError

ALLOW_PICKLE_ENV = "TAILOR_ALLOW_PICKLE"

# What transformers, PEFT and sentence-transformers read as weights when no safetensors file is next to them.
_PICKLE_WEIGHT_NAMES = ("pytorch_model.bin", "adapter_model.bin")
_PICKLE_SHARD_PREFIX = "pytorch_model-"  # sharded: pytorch_model-00001-of-00002.bin + pytorch_model.bin.index.json


def pickle_allowed() -> bool:
    """True when the user opted in to pickle checkpoints (``TAILOR_ALLOW_PICKLE=1``; also ``true``/``yes``)."""
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _pickle_weights(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and (p.name in _PICKLE_WEIGHT_NAMES or (p.name.startswith(_PICKLE_SHARD_PREFIX) and p.name.endswith(".bin")))
    )


def _has_safetensors(folder: Path) -> bool:
    return any(p.suffix == ".safetensors" for p in folder.iterdir() if p.is_file())


def pickle_only_files(folder: str | Path, *, depth: int = 1) -> list[Path]:
    """The pickle weight files in ``folder`` (and its subfolders, ``depth`` levels down) that have no safetensors
    file beside them, i.e. the ones a loader would actually unpickle. Subfolders matter for sentence-transformers,
    whose modules (``2_Dense/``, …) keep their own weights."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found: list[Path] = []
    todo = [(root, 0)]
    while todo:
        current, level = todo.pop()
        try:
            entries = list(current.iterdir())
        except OSError:
            continue
        if not _has_safetensors(current):
            found.extend(_pickle_weights(current))
        if level < depth:
            # Trainer checkpoints sit in subfolders of a run but are not part of the model folder being loaded.
            todo.extend((p, level + 1) for p in entries if p.is_dir() and not p.name.startswith("checkpoint-"))
    return sorted(found)


def _convert_hint(kind: str) -> str:
    if kind == "adapter":
        how = (
            "load it once in Python you trust (`PeftModel.from_pretrained(base, folder)`) and "
            "`model.save_pretrained(folder)`, which writes adapter_model.safetensors"
        )
    elif kind == "embedder":
        how = (
            "load it once in Python you trust (`SentenceTransformer(folder)`) and "
            "`model.save(folder, safe_serialization=True)`"
        )
    else:
        how = (
            "load it once in Python you trust (`AutoModelForCausalLM.from_pretrained(folder)`) and "
            "`model.save_pretrained(folder)`, which writes model.safetensors"
        )
    return (
        f"convert it to safetensors: {how}; or, if you trust the file, pass --allow-pickle "
        f"(`tailor --allow-pickle <command> …`) or set {ALLOW_PICKLE_ENV}=1"
    )


def refuse_pickle_weights(folder: str | Path, *, kind: str = "model", depth: int = 1) -> None:
    """Raise ``ConfigError`` when ``folder`` holds only pickle weights and the user has not opted in.

    ``kind`` (``model``, ``adapter``, ``embedder``, ``checkpoint``) only shapes the conversion hint. A hub id or a
    missing folder passes: the caller's own loader reports those, and for hub ids ``safetensors_kwargs`` makes
    transformers itself refuse a ``.bin``-only repository.
    """
    if pickle_allowed():
        return
    files = pickle_only_files(folder, depth=depth)
    if not files:
        return
    names = ", ".join(str(f) for f in files)
    what = "a pickle checkpoint" if len(files) == 1 else "pickle checkpoints"
    raise ConfigError(
        f"{names} {'is' if len(files) == 1 else 'are'} {what}, which can run code when loaded; "
        f"tailorlm loads safetensors weights only",
        hint=_convert_hint(kind),
    )


def safetensors_kwargs() -> dict[str, Any]:
    """Extra ``from_pretrained`` keywords: ``use_safetensors=True`` unless pickles are allowed.

    For a local folder ``refuse_pickle_weights`` has already given the clear message; this covers hub ids, where
    transformers then raises instead of downloading and unpickling ``pytorch_model.bin``.
    """
    return {} if pickle_allowed() else {"use_safetensors": True}
