"""Which engine runs a System: ``engine: auto`` takes the fast local path wherever it gives the same answers.

``auto`` picks the `ct2` engine (CTranslate2, fp32) for a local causal LM on a CPU when CTranslate2 is installed,
knows the architecture, and the adapters merge (LoRA and kin); otherwise the `hf` engine. fp32 CTranslate2 gave the
same greedy answers as transformers on the demo's eval set (docs/models-and-engines.md); int8 did not, so it is
never chosen automatically. ``TAILOR_ENGINE=hf`` (or ``ct2``) overrides what ``auto`` resolves to, e.g. to compare.

The resolved engine and its settings go into the prediction cache key and ``metrics.json``, so answers from two
engines are never mixed. Naming ``engine: ct2`` where it cannot run is an error before any work, not a fallback.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailorlm.core.system import System
from tailorlm.errors import ConfigError
from tailorlm.models.engines.ct2 import CONSTRAINT_REFUSED

# PEFT adapter types whose weights merge into the base (``merge_and_unload``); prompt-learning ones do not.
MERGEABLE_ADAPTERS = frozenset({"LORA", "ADALORA", "LOHA", "LOKR", "IA3", "OFT", "BOFT", "VERA", "FOURIERFT"})
ENGINE_ENV = "TAILOR_ENGINE"


@dataclass(frozen=True)
class EngineChoice:
    """The engine that will run, its settings (as recorded in caches and metrics), and why it was chosen."""

    name: str
    reason: str
    settings: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"engine": self.name, **self.settings, "reason": self.reason}


def ct2_blocker(system: System, device: str = "auto", dtype: Any = "auto", *, constrained: bool = False) -> str | None:
    """Why the ct2 engine cannot run this System here, or None when it can.

    ``constrained``: the caller will pass constraints per call (e.g. each BFCL question's tools), which CTranslate2
    cannot apply any more than a constraint in ``system.generation``.
    """
    if system.head is not None:
        return "a System with a head answers with labels, which only the hf engine computes"
    if constrained or system.generation.constraint is not None:
        return CONSTRAINT_REFUSED
    if importlib.util.find_spec("ctranslate2") is None:
        return "CTranslate2 is not installed (pip install ctranslate2)"
    if device not in ("auto", "cpu"):
        return f"device {device!r}: the ct2 engine runs on the CPU here"
    if str(dtype) not in ("auto", "float32", "fp32", "torch.float32"):
        return f"dtype {dtype!r}: the ct2 engine runs fp32 (or int8 via engine_options.compute_type)"
    if device == "auto" and _has_gpu():
        return "a GPU is available: transformers runs there"
    arch = _architecture(system.model)
    if arch is None:
        return f"model {system.model!r} is not a local folder with a config.json to convert"
    if not arch[1].endswith("ForCausalLM"):
        return f"{arch[1]} is not a causal LM"
    from ctranslate2.converters.transformers import _MODEL_LOADERS

    if arch[0] not in _MODEL_LOADERS:
        return f"CTranslate2 {_ct2_version()} cannot convert {arch[1]} ({arch[0]})"
    for adapter in system.adapters:
        kind = _adapter_type(adapter.path)
        if kind not in MERGEABLE_ADAPTERS:
            return f"adapter {adapter.path} is {kind}, which does not merge into the weights (LoRA-family ones do)"
    return None


def resolve_engine(
    system: System, *, device: str = "auto", dtype: Any = "auto", constrained: bool = False
) -> EngineChoice:
    """The engine ``build_engine`` will construct for ``system`` (see the module docstring). ``constrained``: calls
    will carry constraints (constrained decoding), so ``auto`` must resolve to hf."""
    if system.engine == "ct2":
        blocker = ct2_blocker(system, device, dtype, constrained=constrained)
        if blocker:
            raise ConfigError(f"engine ct2 cannot run this System: {blocker}", hint="use engine: hf (or auto)")
        return EngineChoice("ct2", "named by the System", _ct2_settings(system))
    if system.engine != "auto":
        return EngineChoice(system.engine, "named by the System")
    override = os.environ.get(ENGINE_ENV, "").strip().lower()
    if override and override not in ("hf", "ct2", "auto"):
        raise ConfigError(f"{ENGINE_ENV}={override!r} is not an engine", hint="use hf, ct2 or auto")
    if override == "hf":
        return EngineChoice("hf", f"{ENGINE_ENV}=hf")
    blocker = ct2_blocker(system, device, dtype, constrained=constrained)
    if override == "ct2":
        if blocker:
            raise ConfigError(f"{ENGINE_ENV}=ct2 cannot run this System: {blocker}")
        return EngineChoice("ct2", f"{ENGINE_ENV}=ct2", _ct2_settings(system))
    if blocker:
        return EngineChoice("hf", blocker)
    return EngineChoice("ct2", "auto: a local causal LM on a CPU with CTranslate2", _ct2_settings(system))


def _ct2_settings(system: System) -> dict[str, Any]:
    return {"compute_type": system.engine_options.compute_type, "ctranslate2": _ct2_version()}


def _ct2_version() -> str:
    from importlib.metadata import version

    return version("ctranslate2")


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _architecture(spec: str) -> tuple[str, str] | None:
    """``(config class name, architecture)`` of a local model folder, or None where there is no folder."""
    from tailorlm.models.load import resolve_model_path

    try:
        path = Path(resolve_model_path(spec))
    except Exception:  # a missing model is reported by the engine that loads it, with its own message
        return None
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        from transformers import CONFIG_MAPPING

        config_class = CONFIG_MAPPING[config["model_type"]].__name__
    except (ValueError, KeyError):
        return None
    architectures = config.get("architectures") or ["?"]
    return config_class, str(architectures[0])


def _adapter_type(path: str) -> str:
    try:
        return str(json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))["peft_type"])
    except (OSError, ValueError, KeyError):
        return "unreadable"
