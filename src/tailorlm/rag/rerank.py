"""Optional rerankers: a sentence-transformers CrossEncoder folder, or any Engine asked whether a passage answers
the question. Off by default: no cross-encoder ships offline, and the LLM scorer costs one generation per passage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tailorlm.errors import ModelNotFoundError

_LLM_PROMPT = (
    "Rate how well the passage answers the question, from 0 (unrelated) to 10 (answers it directly). "
    "Reply with the number only.\n\nQuestion: {question}\n\nPassage:\n<<<\n{passage}\n>>>"
)


class CrossEncoderReranker:
    def __init__(self, folder: str) -> None:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"reranker folder not found: {folder}", hint="give a saved CrossEncoder folder")
        from sentence_transformers import CrossEncoder

        from tailorlm.models.weights import refuse_pickle_weights, safetensors_kwargs

        refuse_pickle_weights(path, kind="embedder", depth=1)
        self.model = CrossEncoder(
            str(path), device="cpu", local_files_only=True, model_kwargs=safetensors_kwargs() or None
        )

    def __call__(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        return [float(s) for s in self.model.predict([(query, p) for p in passages], show_progress_bar=False)]


class LLMReranker:
    """Scores relevance 0–10 with an Engine (greedy); unparseable replies score 0. The passage is fenced as data."""

    def __init__(self, engine: Any, max_passage_chars: int = 2000) -> None:
        self.engine = engine
        self.max_passage_chars = max_passage_chars

    def __call__(self, query: str, passages: Sequence[str]) -> list[float]:
        from tailorlm.models.engines.base import GenerationParams

        messages = [
            [{"role": "user", "content": _LLM_PROMPT.format(question=query, passage=p[: self.max_passage_chars])}]
            for p in passages
        ]
        outs = self.engine.generate(messages, GenerationParams(max_new_tokens=4, temperature=0.0))
        return [_score(o.text) for o in outs]


def _score(text: str) -> float:
    m = re.search(r"\d+(?:\.\d+)?", text)
    value = float(m.group()) if m else 0.0
    return value if math.isfinite(value) else 0.0
