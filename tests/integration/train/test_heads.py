"""Classification and regression heads on a tiny random model: only the adapter and the head train, the regression
loss falls, the System round-trips and the eval harness scores it with probabilities, and the CLI runs end to end."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.errors import DataError
from tailorlm.train.heads import HeadRecipe, fit

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
POSITIVE = ["a fine film .", "great fun !", "the actors are fantastic .", "hello , world !"]
NEGATIVE = ["dull and flat .", "a lazy dog of a movie .", "thumbs down .", "two plus two is boring ."]


def _write_tsv(path: Path, n: int = 24) -> Path:
    """SST-2's layout: no header, ``sentence<TAB>0|1``."""
    rows = [(POSITIVE[i % 4], 1) if i % 2 else (NEGATIVE[i % 4], 0) for i in range(n)]
    path.write_text("".join(f"{t}\t{y}\n" for t, y in rows))
    return path


def _recipe(tmp_path: Path, model: Path, *overrides: str) -> HeadRecipe:
    data = _write_tsv(tmp_path / "train.tsv")
    base = [
        f"model={model}",
        f"data.path={data}",
        "data.columns=[text, label]",
        "labels=[negative, positive]",
        "training.batch_size=8",
        "training.max_steps=3",
    ]
    return load_config(HeadRecipe, None, [*base, *overrides])


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


@pytest.mark.isa
@pytest.mark.parametrize(("method", "marker"), [("lora", "lora_"), ("dora", "lora_"), ("ia3", "ia3_")])
def test_peft_head_changes_only_the_adapter_and_the_score_layer(
    tmp_path: Path, tiny_model_dir: Path, method: str, marker: str
) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, f"strategy.method={method}")
    snap = Snapshot()
    with Run.create("clf", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run, callbacks=[snap])
    changed = snap.changed()
    assert any(marker in n for n in changed), sorted(changed)
    # PEFT SEQ_CLS trains a copy of the new head (modules_to_save); the original stays as it was.
    assert any("score.modules_to_save" in n for n in changed), sorted(changed)
    assert all(marker in n or "score.modules_to_save" in n for n in changed), sorted(changed)
    assert system.head is not None and system.head.labels == ["negative", "positive"]
    assert (run.artifacts / "adapter" / "adapter_config.json").is_file()


def test_freeze_head_trains_the_top_block_and_the_head(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "strategy.method=freeze", "strategy.train_top_n_blocks=1")
    snap = Snapshot()
    with Run.create("clf", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run, callbacks=[snap])
    changed = snap.changed()
    assert "score.weight" in changed and any(".layers.1." in n for n in changed)
    assert all(".layers.1." in n or n == "score.weight" for n in changed), sorted(changed)
    assert Path(system.model) == run.artifacts / "model" and not system.adapters


def test_metrics_hold_accuracy_ci_and_calibration(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "eval_fraction=0.25")
    with Run.create("clf", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run)
    ev = json.loads((run.path / "metrics.json").read_text())["eval"]
    assert ev["n"] == 6 and ev["accuracy_low"] <= ev["accuracy"] <= ev["accuracy_high"]
    # The fitted temperature never makes the held-out NLL worse than T = 1.
    assert ev["nll_after"] <= ev["nll_before"] + 1e-9
    assert system.head is not None and system.head.temperature == pytest.approx(ev["temperature"])


def test_regression_head_loss_falls(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "scores.jsonl"
    rows = [{"text": t, "score": 1.0} for t in POSITIVE] + [{"text": t, "score": -1.0} for t in NEGATIVE]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_config(
        HeadRecipe,
        None,
        [
            f"model={tiny_model_dir}",
            f"data.path={path}",
            "data.label_field=score",
            "problem=regression",
            "strategy.method=full",
            "eval_fraction=0",
            "training.batch_size=8",
            "training.max_steps=15",
            "training.learning_rate=3e-3",
            "training.lr_scheduler=constant",
            "training.warmup_ratio=0",
        ],
    )
    with Run.create("reg", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run)
    losses = [r["loss"] for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < 0.5 * losses[0], losses
    from tailorlm.models.build import build_engine

    (answer,) = build_engine(System.load(run.artifacts), device="cpu").generate([POSITIVE[0]])
    assert answer.probabilities is None and abs(float(answer.text)) < 10
    assert system.head is not None and system.head.problem == "regression"


def _task(folder: Path) -> Path:
    rows = [{"text": t, "label": "positive"} for t in POSITIVE] + [{"text": t, "label": "negative"} for t in NEGATIVE]
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "task.yaml").write_text(
        textwrap.dedent(
            """\
            name: tiny-sentiment
            eval: {path: eval.jsonl, fields: {input: text, reference: label}}
            metrics: [accuracy]
            generation: {max_new_tokens: 8}
            """
        )
    )
    return folder / "task.yaml"


class KeepModel(TrainerCallback):
    """The trained model as it is in memory when training ends."""

    model: Any = None

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.model = model


def test_the_system_round_trips_and_the_harness_scores_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tailorlm.core.task import Task
    from tailorlm.eval.runner import evaluate
    from tailorlm.models.build import build_engine
    from tailorlm.models.engines.head import HeadEngine

    recipe = _recipe(tmp_path, tiny_model_dir, "eval_fraction=0.25")
    keep = KeepModel()
    with Run.create("clf", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run, callbacks=[keep])
    loaded = System.load(run.artifacts)
    assert loaded == system

    # The served logits equal the trained model's: adapter and score layer come back from the saved folder.
    engine = build_engine(loaded, device="cpu")
    assert isinstance(engine, HeadEngine)
    texts = POSITIVE + NEGATIVE
    enc = engine.tokenizer(
        texts, padding=True, truncation=True, max_length=recipe.training.max_length, return_tensors="pt"
    )
    with torch.no_grad():
        expected = keep.model.eval()(**enc).logits
    torch.testing.assert_close(engine.logits(texts), expected, atol=1e-5, rtol=1e-4)

    result = evaluate(loaded, Task.load(_task(tmp_path)), root=tmp_path / "runs", cache_dir=tmp_path / "cache")
    assert result.metrics["n"] == 8 and 0 <= result.metrics["metrics"]["accuracy"]["value"] <= 1
    rows = [json.loads(line) for line in (result.run.path / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["prediction"] in ("negative", "positive")
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["prediction"] == max(row["probabilities"], key=row["probabilities"].get)


@pytest.mark.isa
def test_cli_trains_evaluates_and_generates(tmp_path: Path, tiny_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    runner = CliRunner()
    data = _write_tsv(tmp_path / "train.tsv")
    recipe = REPO / "recipes" / "classify-sst2-lora.yaml"
    args = [
        "train",
        "classify",
        str(recipe),
        f"model={tiny_model_dir}",
        f"data.path={data}",
        "data.limit=null",
        f"eval_data.path={data}",
        "training.max_steps=2",
        "--runs-root",
        str(tmp_path / "runs"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "eval accuracy (95% CI)" in result.output and "ECE before → after" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    artifacts = run_dir / "artifacts"
    assert System.load(artifacts).created_by == run_dir.name

    task = _task(tmp_path)
    evaluated = runner.invoke(app, ["eval", str(artifacts), "--task", str(task), "--root", str(tmp_path / "evals")])
    assert evaluated.exit_code == 0, evaluated.output
    generated = runner.invoke(app, ["generate", "--system", str(artifacts), "--json", POSITIVE[0]])
    assert generated.exit_code == 0, generated.output
    (row,) = json.loads(generated.output)
    assert row["text"] in ("negative", "positive") and set(row["probabilities"]) == {"negative", "positive"}


def test_a_bad_label_column_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "data.label_field=sentiment")
    with pytest.raises(DataError) as err, Run.create("bad", root=tmp_path / "runs", config=recipe) as run:
        fit(recipe, run)
    assert str(tmp_path / "train.tsv") in str(err.value) and "data.label_field" in str(err.value)
    assert "'sentiment'" in str(err.value)


def test_sst2_recipe_data_loads(shared_data: Path) -> None:
    """The shipped recipe's data: SST-2 train/dev TSVs from ../shared, ids 0/1 mapped to the task's label names."""
    from tailorlm.train.heads.data import label_ids, load_examples

    recipe = load_config(HeadRecipe, REPO / "recipes" / "classify-sst2-lora.yaml")
    train = load_examples(
        recipe.data.model_copy(update={"path": str(shared_data / "sst/sst2_train.tsv")}), "classification"
    )
    dev = load_examples(
        recipe.eval_data.model_copy(update={"path": str(shared_data / "sst/sst2_dev.tsv")}),  # type: ignore[union-attr]
        "classification",
    )
    assert len(train) == recipe.data.limit and len(dev) == 872
    assert recipe.labels == ["negative", "positive"]
    assert set(label_ids(dev, recipe.labels, "eval")) == {0, 1}
    assert np.mean(label_ids(dev, recipe.labels, "eval")) == pytest.approx(0.5, abs=0.05)
