"""Fixtures shared by the RAG integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module", autouse=True)
def _tailor_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temp cache shared by the RAG test modules: the embedder's ONNX export (~8 s) happens once per session.

    Module-scoped, and restored after each module: tests elsewhere must keep seeing the user's cache (the default
    model's conversion lives there).
    """
    old = os.environ.get("TAILOR_CACHE")
    folder = tmp_path_factory.getbasetemp() / "rag-tailor-cache"
    folder.mkdir(exist_ok=True)
    os.environ["TAILOR_CACHE"] = str(folder)
    yield
    if old is None:
        os.environ.pop("TAILOR_CACHE", None)
    else:
        os.environ["TAILOR_CACHE"] = old
