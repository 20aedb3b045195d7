"""Preference optimization on a tiny random model: every method trains through the CLI and writes a System, the
first step's loss is each loss at "policy = reference", LoRA trains only its adapter against the base with no
second model, a continued System's adapter is its own reference, full training is evaluated against its starting
weights, and overfitting four pairs ranks all four right by implicit reward."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.train.align.config import DpoRecipe
from tailorlm.train.align.dpo import build_dpo_trainer, fit_dpo
from tailorlm.train.align.preference_eval import preference_eval

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "dpo-lora.yaml"

QUESTIONS = ["what is two plus two?", "capital of France?", "capital of Italy?", "say hello"]
GOOD = ["four", "Paris", "Rome", "hello, world!"]
BAD = ["the lazy dog jumps over it", "a quick brown fox", "0123456789 0123456789", "dog"]
RANKINGS = ("reference_ranking", "policy_ranking", "implicit_accuracy")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """A 32-wide model gains nothing from a second thread, and on a shared 2-core machine the two threads wait on
    each other at every op (many times slower beside another job)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_pairs(path: Path, n: int = 16) -> Path:
    rows = [
        {"prompt": f"{QUESTIONS[i % 4]} (#{i})", "chosen": GOOD[i % 4], "rejected": BAD[(i + i // 4) % 4]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write_binary(path: Path, n: int = 16) -> Path:
    """KTO's unpaired records: a good answer labelled true, a bad one false, alternating."""
    rows = [
        {
            "prompt": f"{QUESTIONS[i % 4]} (#{i})",
            "completion": GOOD[i % 4] if i % 2 else BAD[i % 4],
            "label": i % 2 == 1,
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(tmp_path: Path, model: Path | str, *overrides: str, n: int = 16) -> DpoRecipe:
    data = _write_pairs(tmp_path / "pairs.jsonl", n)
    base = [f"model={model}", f"data.path={data}", "training.batch_size=4", "training.max_steps=2"]
    base += ["training.max_length=128", "canaries.enabled=false"]
    return load_config(DpoRecipe, RECIPE, [*base, *overrides])


def _losses(run_dir: Path) -> dict[int, float]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


class Snapshot(TrainerCallback):
    """The model's parameters as training starts and as it ends."""

    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]

    @staticmethod
    def _copy(model: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.before = self._copy(model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.after = self._copy(model)

    def changed(self) -> set[str]:
        return {n for n, p in self.before.items() if not torch.equal(p, self.after[n])}


# At step 1 a new LoRA adapter is zero, so the policy is the reference and every log-ratio is 0: each loss is
# its value at 0. DPO: -log σ(0) = log 2; IPO: (0 - 1/(2β))² = 25 for β = 0.1; hinge: max(0, 1 - β·0) = 1;
# KTO: λ(1 - σ(β(0 - z_ref))) with z_ref = max(0, KL) = 0, so 1 - σ(0) = 0.5 for either label.
FIRST_LOSS = {"dpo": math.log(2), "ipo": (1 / (2 * 0.1)) ** 2, "hinge": 1.0, "kto": 0.5}


@pytest.mark.parametrize("method", ["dpo", "ipo", "hinge", "kto", "orpo", "simpo"])
def test_cli_trains_each_method(tmp_path: Path, tiny_model_dir: Path, method: str) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    data = (_write_binary if method == "kto" else _write_pairs)(tmp_path / "data.jsonl")
    args = ["train", "dpo", str(RECIPE), f"model={tiny_model_dir}", f"data.path={data}", f"method={method}"]
    args += ["training.max_steps=2", "training.batch_size=4", "training.max_length=128", "canaries.enabled=false"]
    result = CliRunner().invoke(app, [*args, "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert f"{method} · lora" in result.output and "implicit-reward accuracy" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    system = System.load(run_dir / "artifacts")
    (adapter,) = system.adapters
    assert (Path(adapter.path) / "adapter_config.json").is_file() and not (Path(adapter.path) / "ref").exists()
    assert system.model == str(tiny_model_dir) and system.created_by == run_dir.name

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["dpo_method"] == method
    assert metrics["beta"] == (2.0 if method == "simpo" else 0.1)
    losses = _losses(run_dir)
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())
    if method in FIRST_LOSS:
        assert losses[1] == pytest.approx(FIRST_LOSS[method], abs=1e-4)
    if method == "kto":
        assert "held_out" not in metrics  # binary records have no pairs to rank
        return
    held = metrics["held_out"]
    assert held["pairs"] == 3  # 20% of 16, seeded
    for key in RANKINGS:
        assert held[key]["ci_low"] <= held[key]["rate"] <= held[key]["ci_high"], key


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_lora_trains_only_its_adapter_and_builds_no_second_model(
    tmp_path: Path, tiny_model_dir: Path, method: str
) -> None:
    overrides = [f"method={method}", "training.learning_rate=1e-2"]
    if method == "kto":
        overrides.append(f"data.path={_write_binary(tmp_path / 'binary.jsonl')}")
    recipe = _recipe(tmp_path, tiny_model_dir, *overrides)
    snap = Snapshot()
    with Run.create("dpo", root=tmp_path / "runs", config=recipe) as run:
        trainer, base, spec, _ = build_dpo_trainer(recipe, run, callbacks=[snap])
        # The reference is the base with the adapter off; its log-probs are computed once, before training.
        assert trainer.ref_model is None and trainer.args.precompute_ref_log_probs
        assert list(trainer.model.peft_config) == ["default"]
        assert base is None and spec == str(tiny_model_dir)
        trainer.train()
    changed = snap.changed()
    assert changed and all("lora_" in n for n in changed), sorted(changed)


def test_overfitting_four_pairs_ranks_them_all_right(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write_pairs(tmp_path / "four.jsonl", 4)
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        f"data.path={data}",
        f"eval_data.path={data}",  # the same pairs: what was fit is what is scored
        "training.max_steps=15",
        "training.learning_rate=5e-3",
        "training.lr_scheduler=constant",
        "training.warmup_ratio=0",
    )
    with Run.create("dpo", root=tmp_path / "runs", config=recipe) as run:
        fit_dpo(recipe, run)
    losses = _losses(run.path)
    assert losses[1] == pytest.approx(math.log(2), abs=1e-4) and losses[15] < losses[1] - 0.05, losses
    held = json.loads((run.path / "metrics.json").read_text())["held_out"]
    assert held["pairs"] == 4
    assert held["implicit_accuracy"]["rate"] == 1.0 and held["implicit_margin_mean"] > 0
    assert held["implicit_chosen_mean"] > held["implicit_rejected_mean"]


def test_a_continued_systems_adapter_is_its_own_reference(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    from tailorlm.models.load import load_model

    hot = ["training.learning_rate=1e-2", "training.lr_scheduler=constant", "training.warmup_ratio=0"]
    first = _recipe(tmp_path, tiny_model_dir, "training.max_steps=3", *hot)
    with Run.create("first", root=tmp_path / "runs", config=first) as run:
        start = fit_dpo(first, run)
    start_weights = load_file(Path(start.adapters[0].path) / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in start_weights.items())  # not the base any more

    recipe = _recipe(tmp_path, tiny_model_dir, f"system={run.artifacts}", "eval_fraction=0.25", *hot)
    with Run.create("check", root=tmp_path / "runs", config=recipe) as check:
        trainer, base, spec, held_rows = build_dpo_trainer(recipe, check)
    assert base is not None and spec == str(tiny_model_dir) and held_rows
    # TRL keeps a frozen copy of the starting adapter as "ref": no second model either.
    assert trainer.ref_model is None and set(trainer.model.peft_config) == {"default", "ref"}
    untrained = preference_eval(trainer.model, trainer.processing_class, held_rows, beta=recipe.beta_value)
    assert untrained["implicit_margin_mean"] == pytest.approx(0, abs=1e-5)
    assert untrained["mean_log_ratio"] == pytest.approx(0, abs=1e-5)
    assert untrained["implicit_accuracy"]["rate"] == 0.5  # every implicit reward is 0: ties, counted half
    assert untrained["reference_ranking"] == untrained["policy_ranking"]
    # Against the base model instead, the starting System is already far from its reference.
    base_model = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32).model
    against_base = preference_eval(
        trainer.model, trainer.processing_class, held_rows, beta=recipe.beta_value, reference=base_model
    )
    assert abs(against_base["mean_log_ratio"]) > 1e-3

    snap = Snapshot()
    with Run.create("continued", root=tmp_path / "runs", config=recipe) as cont:
        system = fit_dpo(recipe, cont, callbacks=[snap])
    changed = snap.changed()
    assert changed and all("lora_" in n and ".default." in n for n in changed), sorted(changed)  # "ref" stays
    adapter = Path(system.adapters[0].path)
    assert adapter == cont.artifacts / "adapter" and not (adapter / "ref").exists()
    saved = load_file(adapter / "adapter_model.safetensors")
    assert saved.keys() == start_weights.keys()  # the one adapter, as PEFT names it: no ".ref." copies
    assert any(not torch.equal(saved[k], start_weights[k]) for k in saved)  # training moved it
    assert system.model == str(tiny_model_dir) and system.parent == str(run.artifacts)
    held = json.loads((cont.path / "metrics.json").read_text())["held_out"]
    assert held["pairs"] == len(held_rows) and all(key in held for key in RANKINGS)


@pytest.mark.parametrize(
    "strategy", [["strategy.method=full"], ["strategy.method=freeze", "strategy.train_top_n_blocks=1"]]
)
def test_full_and_freeze_are_evaluated_against_their_starting_weights(
    tmp_path: Path, tiny_model_dir: Path, strategy: list[str]
) -> None:
    # A learning rate too small to move the weights: the policy is its reference, whatever TRL kept of it.
    recipe = _recipe(tmp_path, tiny_model_dir, *strategy, "training.learning_rate=1e-12")
    with Run.create("dpo", root=tmp_path / "runs", config=recipe) as run:
        system = fit_dpo(recipe, run)
    assert Path(system.model) == run.artifacts / "model" and not system.adapters
    held = json.loads((run.path / "metrics.json").read_text())["held_out"]
    assert held["pairs"] == 3
    assert held["mean_log_ratio"] == pytest.approx(0, abs=1e-4)
    assert held["reference_ranking"] == held["policy_ranking"]
