"""The demonstration job: load the default model, answer three questions in one batch, record a Run.

It is what `make demo` runs until the ladder (which measures every customization rung) becomes the main job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tailorlm.core.config import StrictModel
from tailorlm.core.io import atomic_write_text
from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.models.engines.base import Completion, GenerationParams

# Each question comes with a word that a correct answer contains, so the demo can say whether it was right.
DEMO_QUESTIONS: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris"),
    ("How many days are there in a week?", "seven|7"),
    ("What is the boiling point of water in degrees Celsius?", "100"),
]


class DemoConfig(StrictModel):
    model: str = "default"
    max_new_tokens: int = 48
    device: str = "auto"
    dtype: str = "auto"


@dataclass
class DemoResult:
    run: Run
    questions: list[str]
    expected: list[str]
    completions: list[Completion]
    load_seconds: float
    generate_seconds: float

    @property
    def correct(self) -> list[bool]:
        return [
            any(word.lower() in c.text.lower() for word in exp.split("|"))
            for exp, c in zip(self.expected, self.completions, strict=True)
        ]


def run_demo(config: DemoConfig | None = None, *, root: str | Path = "runs") -> DemoResult:
    """Answer the demo questions with ``config.model`` and keep everything in a Run directory."""
    from tailorlm.models.build import build_engine

    config = config or DemoConfig()
    system = System(name="demo", model=config.model, generation=GenerationParams(max_new_tokens=config.max_new_tokens))
    with Run.create("demo", root=root, config=config, seed=0, kind="demo") as run:
        start = time.perf_counter()
        engine = build_engine(system, device=config.device, dtype=config.dtype)
        load_s = time.perf_counter() - start
        questions = [q for q, _ in DEMO_QUESTIONS]
        start = time.perf_counter()
        completions = engine.generate(questions, system.generation)
        gen_s = time.perf_counter() - start
        result = DemoResult(run, questions, [e for _, e in DEMO_QUESTIONS], completions, load_s, gen_s)

        lines = [
            json.dumps({"input": q, "prediction": c.text, "correct": ok, **c.usage.model_dump()})
            for q, c, ok in zip(questions, completions, result.correct, strict=True)
        ]
        atomic_write_text(run.path / "predictions.jsonl", "\n".join(lines) + "\n")
        tokens = sum(c.usage.completion_tokens for c in completions)
        run.write_metrics(
            {
                "accuracy": sum(result.correct) / len(questions),
                "load_s": round(load_s, 3),
                "generate_s": round(gen_s, 3),
                "completion_tokens": tokens,
                "tokens_per_s": round(tokens / gen_s, 2) if gen_s > 0 else None,
            }
        )
        system.model_copy(update={"created_by": run.id}).save(run.artifacts)
    return result
