"""Continued pretraining on a tiny random model: packed documents never see each other, held-out perplexity falls
on repetitive text, resume is exact, and the CLI writes perplexity before/after, canaries and a usable System."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.rag.types import Document
from tailorlm.train.pretrain import PretrainRecipe, fit
from tailorlm.train.pretrain.data import PackedCollator, pack_blocks, tokenize_documents

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SENTENCES = [
    "The capital of France is Paris.",
    "The capital of Italy is Rome.",
    "A quick brown fox jumps over the lazy dog.",
    "Question: what is two plus two? Answer: four.",
]


def _corpus(folder: Path, n: int = 12) -> Path:
    """Repetitive documents: every one cycles through the same sentences, so held-out ones are predictable."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(4 + i % 3))
        (folder / f"doc{i:02d}.txt").write_text(text)
    return folder


def _recipe(tmp_path: Path, model: Path, *overrides: str) -> PretrainRecipe:
    base = [f"model={model}", f"data.path={_corpus(tmp_path / 'corpus')}", "eval_fraction=0.25"]
    base += ["training.batch_size=2", "training.max_length=48", "training.max_steps=3", "canaries.enabled=false"]
    return load_config(PretrainRecipe, None, [*base, *overrides])


def test_documents_end_with_eos_and_pack_without_losing_tokens(tiny_tokenizer: Any) -> None:
    text = "The capital of France is Paris. "
    docs = [Document(doc_id=str(i), source="s", title="t", text=text * i) for i in (1, 9)]
    ids = tokenize_documents(docs, tiny_tokenizer)
    assert all(row[-1] == tiny_tokenizer.eos_token_id for row in ids)
    blocks = pack_blocks(ids, 16)
    assert all(len(b["input_ids"]) <= 16 and sum(b["seq_lengths"]) == len(b["input_ids"]) for b in blocks)
    assert sorted(t for b in blocks for t in b["input_ids"]) == sorted(t for row in ids for t in row)


def test_a_packed_rows_logits_for_each_document_equal_the_document_alone(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    eos = tokenizer.eos_token_id
    a = [*tokenizer(SENTENCES[0] + " " + SENTENCES[2])["input_ids"], eos]
    b = [*tokenizer(SENTENCES[1])["input_ids"], eos]
    (row,) = pack_blocks([a, b], 128)  # both fit one block: the packer puts them in one row, the longer first
    assert row["input_ids"] == a + b and row["seq_lengths"] == [len(a), len(b)]

    batch = PackedCollator(tokenizer.pad_token_id)([row])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone_a = model(input_ids=torch.tensor([a]), use_cache=False).logits[0]
        alone_b = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        # The control: the same row without position resets is ordinary concatenation, and B then sees A.
        leaky = model(input_ids=torch.tensor([a + b]), use_cache=False).logits[0]
    torch.testing.assert_close(packed[: len(a)], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[len(a) :], alone_b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(leaky[len(a) :], alone_b, atol=1e-3), "the control must leak, or this proves nothing"
    # B's first token is not a target (its only left context would be A), every other token is.
    assert batch["labels"][0, len(a)] == -100 and (batch["labels"][0, len(a) + 1 :] != -100).all()


def test_a_tiny_pretrain_lowers_heldout_perplexity(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        "strategy.method=full",
        "training.learning_rate=1e-2",
        "training.lr_scheduler=constant",
        "training.warmup_ratio=0",
        "training.max_steps=12",
    )
    with Run.create("pretrain", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run)
    ppl = json.loads((run.path / "metrics.json").read_text())["perplexity"]
    assert ppl["after"] < 0.5 * ppl["before"], ppl
    assert ppl["tokens"] > 0 and ppl["blocks"] >= 1
    assert Path(system.model) == run.artifacts / "model" and not system.adapters
    datasets = {d["name"]: d["n_records"] for d in run.meta["datasets"]}
    assert datasets == {"train": 9, "eval": 3}  # 12 documents, a quarter held out by document


class StopAt(TrainerCallback):
    """Simulates a killed run: training stops after ``step`` (its checkpoint is written first)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_training_stop = True


def _losses(run: Run) -> dict[int, float]:
    rows = map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_resume_matches_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    steps = ("training.max_steps=4", "training.save_steps=2", "training.eval_steps=2")
    recipe = _recipe(tmp_path, tiny_model_dir, *steps)
    with Run.create("whole", root=tmp_path / "runs", config=recipe) as whole:
        fit(recipe, whole)
    with Run.create("killed", root=tmp_path / "runs", config=recipe) as killed:
        fit(recipe, killed, callbacks=[StopAt(2)])
    with Run.reopen(killed.path) as resumed:
        fit(recipe, resumed, resume=True)

    assert sorted(_losses(resumed)) == [1, 2, 3, 4]  # steps 3-4 continued from checkpoint-2
    assert _losses(resumed)[4] == pytest.approx(_losses(whole)[4], rel=1e-5)
    a = load_file(whole.artifacts / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed.artifacts / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    ppl_whole = json.loads((whole.path / "metrics.json").read_text())["perplexity"]
    ppl_resumed = json.loads((resumed.path / "metrics.json").read_text())["perplexity"]
    assert ppl_resumed["before"] == pytest.approx(ppl_whole["before"], rel=1e-6)
    assert ppl_resumed["after"] == pytest.approx(ppl_whole["after"], rel=1e-5)


def test_cli_writes_perplexity_before_after_canaries_and_a_system_that_generates(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app
    from tailorlm.models.build import build_engine
    from tailorlm.models.engines.base import GenerationParams

    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))  # canary scores are cached per weights
    corpus = _corpus(tmp_path / "corpus")
    args = ["train", "pretrain", str(REPO / "recipes" / "pretrain-lora.yaml"), f"model={tiny_model_dir}"]
    args += [f"data.path={corpus}", "training.max_steps=2", "training.max_length=48", "eval_fraction=0.25"]
    args += ["canaries.limit=20", "canaries.max_drop=1.0", "--runs-root", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "held-out perplexity" in result.output and "canaries" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"before", "after", "tokens", "blocks"} <= set(metrics["perplexity"])
    assert {"before", "after", "drop", "promotable"} <= set(metrics["canaries"])
    assert metrics["eval_loss"] == pytest.approx(metrics["perplexity"]["nll_per_token_after"])
    assert json.loads((run_dir / "run.json").read_text())["kind"] == "pretrain"

    system = System.load(run_dir / "artifacts")
    assert system.adapters and system.created_by == run_dir.name and system.parent == str(tiny_model_dir)
    engine = build_engine(system, device="cpu")
    (completion,) = engine.generate(["The capital of"], GenerationParams(max_new_tokens=4))
    assert completion.usage.completion_tokens >= 1


def test_cli_names_an_empty_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["train", "pretrain", str(REPO / "recipes" / "pretrain-lora.yaml"), f"model={tiny_model_dir}"]
    result = CliRunner().invoke(app, [*args, f"data.path={empty}", "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "no documents to train on in" in result.output and "empty" in result.output
    assert "Traceback" not in result.output
