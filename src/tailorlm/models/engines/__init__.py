"""Engines turn requests into completions: ``hf`` (transformers) and ``openai`` (any compatible endpoint)."""

from tailorlm.models.engines.base import Completion, Engine, GenerationParams, Request, StreamChunk, Usage

__all__ = ["Completion", "Engine", "GenerationParams", "Request", "StreamChunk", "Usage"]
