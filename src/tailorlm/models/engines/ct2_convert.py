"""Turn a System's weights (base model plus LoRA adapters) into a CTranslate2 model folder, once.

The folder is cached under ``$TAILOR_CACHE/ct2/<key>``, where the key hashes what decides the converted weights:
the base model (its weight files' names and sizes, as the prediction cache stamps them), each adapter's *content*
(sha256 of its weight files, so a retrained adapter at the same path converts again and a copied one does not),
the adapter weights, the quantization and the CTranslate2 version. Adapters are merged into the base with PEFT
before converting: CTranslate2 has no LoRA layers, and a merged model runs at the base model's speed.

Conversion writes into a temporary folder that is renamed into place only when complete, under a lock, so a killed
conversion leaves nothing that looks finished and two processes never convert the same model twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tailorlm.core.io import atomic_directory, exclusive_lock, sha256_file
from tailorlm.core.system import AdapterSpec
from tailorlm.errors import ConfigError

COMPLETE_MARKER = "tailorlm-ct2.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Bumped when the conversion recipe below changes, so old folders are not reused for a different result.
_RECIPE = 1


def ct2_version() -> str:
    import ctranslate2

    return str(ctranslate2.__version__)


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())


def conversion_key(model_path: str, adapters: Sequence[AdapterSpec], quantization: str) -> str:
    """Content key of a converted model (see the module docstring)."""
    base = Path(model_path)
    base_stamp: Any = (
        [[p.relative_to(base).as_posix(), p.stat().st_size] for p in _weight_files(base)]
        if base.is_dir()
        else model_path
    )
    adapter_stamps = [
        {
            "files": [[p.relative_to(a.path).as_posix(), sha256_file(p)] for p in _weight_files(Path(a.path))],
            "config": (Path(a.path) / "adapter_config.json").read_text(encoding="utf-8"),
            "weight": a.weight,
        }
        for a in adapters
    ]
    payload = {
        "base": [str(base.resolve()) if base.is_dir() else model_path, base_stamp],
        "adapters": adapter_stamps,
        "quantization": quantization,
        "ctranslate2": ct2_version(),
        "recipe": _RECIPE,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def is_converted(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file() and (folder / "model.bin").is_file()


def converted_model(
    model_path: str, adapters: Sequence[AdapterSpec], quantization: str, cache_dir: Path
) -> tuple[Path, float]:
    """The CTranslate2 folder for these weights, converting on first use. Returns ``(folder, seconds spent)``."""
    folder = cache_dir / "ct2" / conversion_key(model_path, adapters, quantization)
    if is_converted(folder):
        return folder, 0.0
    start = time.perf_counter()
    with exclusive_lock(folder):
        if is_converted(folder):  # another process finished it while we waited
            return folder, time.perf_counter() - start
        with atomic_directory(folder) as tmp:
            _convert(model_path, adapters, quantization, tmp)
            (tmp / COMPLETE_MARKER).write_text(
                json.dumps({"model": model_path, "adapters": [a.path for a in adapters], "quantization": quantization})
            )
    return folder, time.perf_counter() - start


def _convert(model_path: str, adapters: Sequence[AdapterSpec], quantization: str, out: Path) -> None:
    import tempfile

    import ctranslate2
    import torch

    with tempfile.TemporaryDirectory(prefix=".merge-", dir=out.parent) as merged_dir:
        source = str(_merge(model_path, adapters, Path(merged_dir))) if adapters else model_path
        # The converter loads the model with transformers and writes model.bin, config.json and the vocabulary;
        # ``force`` because ``out`` (the temporary folder) already exists.
        with torch.inference_mode():
            ctranslate2.converters.TransformersConverter(source, low_cpu_mem_usage=True).convert(
                str(out), quantization=quantization, force=True
            )


def _merge(model_path: str, adapters: Sequence[AdapterSpec], out: Path) -> Path:
    """Base + adapters merged into plain weights, saved as an HF folder for the converter."""
    import torch

    from tailorlm.models.adapters import apply_adapters
    from tailorlm.models.load import load_model

    loaded = apply_adapters(load_model(model_path, device="cpu", dtype=torch.float32), adapters)
    model = loaded.model
    try:
        merged = model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError) as err:
        raise ConfigError(
            f"the ct2 engine cannot merge these adapters into the base model: {err}",
            hint="LoRA-family adapters merge; for prompt or prefix tuning use engine: hf",
        ) from err
    with torch.inference_mode():
        merged.save_pretrained(out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(out)
    return out
