"""Build the Engine a System names, with its adapters applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tailorlm.core.system import System
from tailorlm.errors import ConfigError


def build_engine(system: System, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8) -> Any:
    """Instantiate the backend a System names, with its adapters applied."""
    from tailorlm.models.engines.select import resolve_engine

    choice = resolve_engine(system, device=device, dtype=dtype)
    if system.head is not None:
        # A head System is a sequence classifier/regressor: it answers with labels, not generated text.
        if choice.name != "hf":
            raise ConfigError(f"a System with a head runs on the hf engine, not {system.engine!r}")
        from tailorlm.models.engines.head import HeadEngine

        return HeadEngine(system, device=device, dtype=dtype, batch_size=batch_size)
    if choice.name == "ct2":
        return build_ct2_engine(system, batch_size=max(batch_size, 16))
    if choice.name == "hf":
        from tailorlm.models.engines.hf import HFEngine
        from tailorlm.models.load import load_model

        loaded = load_model(system.model, device=device, dtype=dtype)
        if system.adapters:
            from tailorlm.models.adapters import apply_adapters

            apply_adapters(loaded, system.adapters)
        return HFEngine(loaded, batch_size=batch_size)
    if choice.name == "openai":
        from tailorlm.models.engines.openai import OpenAIEngine

        if system.adapters:
            raise ConfigError("the openai engine cannot apply local adapters; serve them on the endpoint instead")
        opts = system.engine_options
        return OpenAIEngine(
            system.model,
            base_url=opts.base_url,
            api_key_env=opts.api_key_env or "OPENAI_API_KEY",
            timeout_s=opts.timeout_s,
        )
    if choice.name == "vllm":
        from tailorlm.models.engines.vllm import VLLMEngine

        return VLLMEngine(system)
    raise ConfigError(
        f"engine {system.engine!r} is not available in this installation",
        hint="the llamacpp engine is not built yet: use engine: auto (ct2 on a CPU) or vllm on a GPU",
    )


def build_ct2_engine(system: System, *, batch_size: int = 16) -> Any:
    """The ct2 engine for a System: its weights (adapters merged) converted once and cached (ct2_convert.py)."""
    from transformers import GenerationConfig

    from tailorlm.models.default import cache_root
    from tailorlm.models.engines.ct2 import CT2Engine
    from tailorlm.models.engines.ct2_convert import converted_model
    from tailorlm.models.load import load_tokenizer, resolve_model_path

    path = resolve_model_path(system.model)
    compute_type = system.engine_options.compute_type
    folder, seconds = converted_model(
        path, system.adapters, "float32" if compute_type == "float32" else "int8", cache_root()
    )
    eos = (
        GenerationConfig.from_pretrained(path).eos_token_id
        if (Path(path) / "generation_config.json").is_file()
        else None
    )
    engine = CT2Engine(
        folder,
        load_tokenizer(system.model),
        eos_ids=[eos] if isinstance(eos, int) else list(eos or []),
        name=Path(system.model).name if system.model != "default" else "default",
        compute_type=compute_type,
        batch_size=batch_size,
    )
    engine.settings["convert_s"] = round(seconds, 2)
    return engine
