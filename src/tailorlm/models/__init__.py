"""Models: resolve a spec (HF folder, hub id, or `default`), load it, and run it through an Engine.

Imports are lazy so that light commands (``tailor runs list``) and light modules (configs that only need
``GenerationParams``) never pay for importing torch and transformers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LoadedModel", "build_engine", "load_model", "load_tokenizer", "resolve_model_path"]


def __getattr__(name: str) -> Any:
    if name in ("LoadedModel", "load_model", "load_tokenizer", "resolve_model_path"):
        from tailorlm.models import load

        return getattr(load, name)
    if name == "build_engine":
        from tailorlm.models.build import build_engine

        return build_engine
    raise AttributeError(name)
