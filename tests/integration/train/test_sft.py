"""SFT on a tiny random model: every strategy trains only its parameters, the loss is on the answer only, the
prompt at inference is the trained prompt, the loss falls, resume is exact, and the CLI writes a usable System."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from tailorlm.core.config import load_config
from tailorlm.core.cpu import cpu_info
from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.errors import ConfigError
from tailorlm.models.device import training_bf16
from tailorlm.train.sft import SFTRecipe, fit
from tailorlm.train.sft.recipe import build_trainer

QUESTIONS = ["what is two plus two?", "capital of France?", "capital of Italy?", "say hello", "a quick fox?"]
ANSWERS = ["four", "Paris", "Rome", "hello, world!", "the lazy dog"]


def _write_chats(path: Path, n: int = 8) -> Path:
    lines = []
    for i in range(n):
        q, a = QUESTIONS[i % len(QUESTIONS)], ANSWERS[i % len(ANSWERS)]
        lines.append(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _recipe(tmp_path: Path, model: Path, *overrides: str, n: int = 8) -> SFTRecipe:
    data = _write_chats(tmp_path / "chat.jsonl", n)
    base = [f"model={model}", f"data.path={data}", "training.batch_size=4", "training.max_steps=3"]
    base.append("canaries.enabled=false")  # scored in their own test
    return load_config(SFTRecipe, None, [*base, *overrides])


class Snapshot(TrainerCallback):
    """The model's parameters as training starts and as it ends."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    @staticmethod
    def _copy(model: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.before = self._copy(model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.after = self._copy(model)

    def changed(self) -> set[str]:
        return {n for n, p in self.before.items() if not torch.equal(p, self.after[n])}


ADAPTER_MARKERS = {
    "lora": ("lora_",),
    "dora": ("lora_",),
    "rslora": ("lora_",),
    "ia3": ("ia3_",),
    "prompt_tuning": ("prompt_encoder",),
    "prefix_tuning": ("prompt_encoder",),
    "p_tuning": ("prompt_encoder",),
    "loha": ("hada_",),
    "lokr": ("lokr_",),
    "oft": ("oft_",),
    "vera": ("vera_lambda_",),
}


@pytest.mark.parametrize("method", list(ADAPTER_MARKERS))
def test_peft_methods_change_only_their_adapter(tmp_path: Path, tiny_model_dir: Path, method: str) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, f"strategy.method={method}")
    snap = Snapshot()
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run, callbacks=[snap])
    changed = snap.changed()
    assert changed, "nothing trained"
    assert all(any(m in n for m in ADAPTER_MARKERS[method]) for n in changed), sorted(changed)
    assert (run.artifacts / "adapter" / "adapter_config.json").is_file()
    assert System.load(run.artifacts).adapters[0].path == system.adapters[0].path


def test_freeze_changes_only_the_top_block(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "strategy.method=freeze", "strategy.train_top_n_blocks=1")
    snap = Snapshot()
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        fit(recipe, run, callbacks=[snap])
    changed = snap.changed()
    assert changed and all(".layers.1." in n for n in changed), sorted(changed)
    assert any(".layers.1.mlp." in n for n in changed)


def test_full_changes_the_base_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "strategy.method=full")
    snap = Snapshot()
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run, callbacks=[snap])
    changed = snap.changed()
    assert any("embed_tokens" in n for n in changed) and any(".layers.0." in n for n in changed)
    assert Path(system.model) == run.artifacts / "model" and not system.adapters


def _prompt_and_labels(tmp_path: Path, model: Path, *overrides: str) -> tuple[list[int], list[int]]:
    recipe = _recipe(tmp_path, model, *overrides)
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        trainer, *_ = build_trainer(recipe, run)
    row = trainer.train_dataset[0]
    return row["input_ids"], row["labels"]


def test_loss_is_on_the_answer_only_and_the_prompt_matches_inference(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The prefix with label -100 is token for token what the hf engine feeds the model at inference."""
    from tailorlm.models.engines.hf import HFEngine
    from tailorlm.models.load import load_model
    from tailorlm.prompting.program import render_messages

    # A base System with a prompt program: training renders the user turn through it, as inference does.
    base = System(model=str(tiny_model_dir), prompt={"system": "Be brief.", "template": "Q: {{ input }}"})
    base.save(tmp_path / "base")
    input_ids, labels = _prompt_and_labels(tmp_path, tiny_model_dir, f"system={tmp_path / 'base'}")

    engine = HFEngine(load_model(str(tiny_model_dir), device="cpu"))
    prompt_ids = engine._encode(engine.render(render_messages(base.prompt, QUESTIONS[0])))
    k = len(prompt_ids)
    assert input_ids[:k] == prompt_ids
    assert all(label == -100 for label in labels[:k])
    assert labels[k:] == input_ids[k:] and len(labels) > k
    answer = engine.tokenizer.decode(input_ids[k:])
    assert answer.startswith(ANSWERS[0]) and answer.rstrip().endswith("<|im_end|>")


@pytest.mark.isa
@pytest.mark.parametrize(("method", "lr", "ratio"), [("full", "1e-2", 0.5), ("lora", "1e-2", 0.95)])
def test_loss_falls_when_overfitting_one_batch(
    tmp_path: Path, tiny_model_dir: Path, method: str, lr: str, ratio: float
) -> None:
    # LoRA moves a random 32-wide model slowly (its tied output embedding stays frozen), hence the softer bar.
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        f"strategy.method={method}",
        "training.max_steps=20",
        f"training.learning_rate={lr}",
        "training.lr_scheduler=constant",
        "training.warmup_ratio=0",
        n=4,
    )
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        fit(recipe, run)
    losses = [r["loss"] for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 20
    assert losses[-1] < ratio * losses[0], losses


NO_NATIVE_BF16 = f"this CPU ({cpu_info().model}, {cpu_info().isa}) has no native bf16: precision=bf16 is refused here"


@pytest.mark.isa
@pytest.mark.skipif(not (torch.cuda.is_available() or cpu_info().native_bf16), reason=NO_NATIVE_BF16)
def test_bf16_precision_trains_where_bf16_is_native(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "training.precision=bf16", "training.max_steps=2")
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        fit(recipe, run)
    losses = _losses(run)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses.values())


@pytest.mark.isa
def test_auto_precision_follows_the_cpu_and_bf16_without_it_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    native = torch.cuda.is_available() or cpu_info().native_bf16
    assert training_bf16("auto") is native
    if not native:
        recipe = _recipe(tmp_path, tiny_model_dir, "training.precision=bf16")
        with Run.create("sft", root=tmp_path / "runs", config=recipe) as run, pytest.raises(ConfigError, match="bf16"):
            fit(recipe, run)


def test_memory_plan_fits_the_budget_and_keeps_the_effective_batch(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "training.memory_limit_gb=0.0001")
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        trainer, *_ = build_trainer(recipe, run)
    plan = json.loads((run.path / "memory-plan.json").read_text())
    assert (plan["micro_batch"], plan["grad_accum"], plan["checkpointing"]) == (1, 4, True)
    assert "effective batch 4" in plan["reason"] and "checkpointing on" in plan["reason"]
    args = trainer.args
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 4)
    assert args.activation_checkpointing


def test_micro_batches_train_the_same_as_the_whole_batch(tmp_path: Path, tiny_model_dir: Path) -> None:
    losses = []
    for micro in (4, 1):
        (tmp_path / str(micro)).mkdir()
        # No dropout: its masks would be drawn in a different order for different micro-batches.
        recipe = _recipe(
            tmp_path / str(micro), tiny_model_dir, f"training.micro_batch_size={micro}", "strategy.dropout=0"
        )
        with Run.create("sft", root=tmp_path / str(micro) / "runs", config=recipe) as run:
            fit(recipe, run)
        losses.append(_losses(run))
    # The loss is normalised by the accumulated batch's answer tokens, so accumulation is exact up to fp32 sums.
    assert losses[0].keys() == losses[1].keys()
    for step in losses[0]:
        assert losses[0][step] == pytest.approx(losses[1][step], rel=1e-4)


class StopAt(TrainerCallback):
    """Simulates a killed run: training stops after ``step`` (its checkpoint is written first)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_training_stop = True


def _adapter_weights(run: Run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run.artifacts / "adapter" / "adapter_model.safetensors")


def _losses(run: Run) -> dict[int, float]:
    rows = map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.isa
def test_resume_matches_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(
        tmp_path, tiny_model_dir, "training.max_steps=4", "training.save_steps=2", "training.eval_steps=2", n=16
    )
    with Run.create("whole", root=tmp_path / "runs", config=recipe) as whole:
        fit(recipe, whole)
    with Run.create("killed", root=tmp_path / "runs", config=recipe) as killed:
        fit(recipe, killed, callbacks=[StopAt(2)])
    # An incomplete checkpoint (killed mid-save) must be ignored in favour of the last complete one.
    (killed.path / "checkpoints" / "checkpoint-3").mkdir()
    with Run.reopen(killed.path) as resumed:
        fit(recipe, resumed, resume=True)

    logged = [
        r["step"] for r in map(json.loads, (resumed.path / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert logged == [1, 2, 3, 4]  # steps 3-4 continued from checkpoint-2; nothing was trained twice
    assert _losses(resumed)[4] == pytest.approx(_losses(whole)[4], rel=1e-5)
    a, b = _adapter_weights(whole), _adapter_weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_resume_after_the_last_checkpoint_trains_nothing_more(tmp_path: Path, tiny_model_dir: Path) -> None:
    # Killed in the final save: checkpoint-2 of 2 steps is whole, the adapter is not. Resuming saves, never steps.
    recipe = _recipe(tmp_path, tiny_model_dir, "training.max_steps=2", "training.save_steps=2")
    with Run.create("whole", root=tmp_path / "runs", config=recipe) as whole:
        fit(recipe, whole)
    import shutil

    shutil.rmtree(whole.artifacts)
    with Run.reopen(whole.path) as resumed:
        fit(recipe, resumed, resume=True)
    logged = [
        r["step"] for r in map(json.loads, (resumed.path / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert logged == [1, 2]
    metrics = json.loads((resumed.path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["tokens"] == 0 and math.isfinite(metrics["train_loss"])
    from safetensors.torch import load_file

    saved = load_file(resumed.path / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    for name, value in _adapter_weights(resumed).items():
        torch.testing.assert_close(value, saved[name])


@pytest.mark.isa
def test_cli_trains_and_writes_a_system_that_generates(tmp_path: Path, tiny_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app
    from tailorlm.models.build import build_engine
    from tailorlm.models.engines.base import GenerationParams

    data = _write_chats(tmp_path / "chat.jsonl", 8)
    recipe = Path(__file__).resolve().parents[3] / "recipes" / "sft-lora.yaml"
    args = ["train", "sft", str(recipe), f"model={tiny_model_dir}", f"data.path={data}", "training.max_steps=2"]
    args.append("canaries.limit=20")
    result = CliRunner().invoke(app, [*args, "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "train loss" in result.output and "canaries" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    system = System.load(run_dir / "artifacts")
    assert system.adapters and system.created_by == run_dir.name
    engine = build_engine(system, device="cpu")
    (completion,) = engine.generate([QUESTIONS[0]], GenerationParams(max_new_tokens=4))
    assert completion.usage.completion_tokens >= 1


def test_every_fine_tune_reports_canaries_before_and_after(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))  # canary scores are cached per weights
    for method in ("lora", "full"):
        recipe = _recipe(
            tmp_path,
            tiny_model_dir,
            f"strategy.method={method}",
            "canaries.enabled=true",
            "canaries.limit=20",
            "canaries.max_drop=1.0",
            f"name={method}",
        )
        with Run.create(method, root=tmp_path / "runs", config=recipe) as run:
            fit(recipe, run)
        metrics = json.loads((run.path / "metrics.json").read_text())
        c = metrics["canaries"]
        assert {"before", "after", "drop", "promotable"} <= set(c) and c["promotable"] is True


def test_records_longer_than_max_length_are_skipped_or_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    # Cut from the right, an over-long record would lose its answer and train on nothing.
    recipe = _recipe(tmp_path, tiny_model_dir, "training.max_length=8")
    with (
        pytest.raises(ConfigError, match=r"longer than training\.max_length=8"),
        Run.create("sft", root=tmp_path / "runs", config=None) as run,
    ):
        fit(recipe, run)
