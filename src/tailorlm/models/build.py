"""Build the Engine a System names, with its adapters applied."""

from __future__ import annotations

from typing import Any

from tailorlm.core.system import System
from tailorlm.errors import ConfigError


def build_engine(system: System, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8) -> Any:
    """Instantiate the backend a System names, with its adapters applied."""
    if system.head is not None:
        # A head System is a sequence classifier/regressor: it answers with labels, not generated text.
        if system.engine != "hf":
            raise ConfigError(f"a System with a head runs on the hf engine, not {system.engine!r}")
        from tailorlm.models.engines.head import HeadEngine

        return HeadEngine(system, device=device, dtype=dtype, batch_size=batch_size)
    if system.engine == "hf":
        from tailorlm.models.engines.hf import HFEngine
        from tailorlm.models.load import load_model

        loaded = load_model(system.model, device=device, dtype=dtype)
        if system.adapters:
            from tailorlm.models.adapters import apply_adapters

            apply_adapters(loaded, system.adapters)
        return HFEngine(loaded, batch_size=batch_size)
    if system.engine == "openai":
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
    raise ConfigError(
        f"engine {system.engine!r} is not available in this installation",
        hint="vllm and llamacpp engines arrive with their optional extras: pip install 'tailorlm[vllm]'",
    )
