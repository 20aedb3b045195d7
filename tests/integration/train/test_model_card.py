"""Every sft run writes a Hugging Face model card (artifacts/README.md) that matches the run it describes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tailorlm.core.config import load_config
from tailorlm.core.run import Run
from tailorlm.train.sft import SFTRecipe, fit

pytestmark = pytest.mark.integration


def _recipe(tmp_path: Path, model: Path, *overrides: str) -> SFTRecipe:
    data = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(12)
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    base = [f"model={model}", f"data.path={data}", "training.max_steps=2", "training.batch_size=4"]
    return load_config(SFTRecipe, None, [*base, *overrides])


def _card(run: Run) -> tuple[dict, str]:
    text = (run.artifacts / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_an_adapter_run_writes_a_card_with_data_recipe_metrics_lineage_and_usage(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        "name=card",
        "canaries.enabled=true",
        "canaries.limit=20",
        "canaries.max_drop=1.0",
        "eval_fraction=0.25",
    )
    with Run.create("card", root=tmp_path / "runs", config=recipe, seed=0, parent=str(tiny_model_dir)) as run:
        system = fit(recipe, run)
    meta, body = _card(run)
    metrics = json.loads((run.path / "metrics.json").read_text())

    # front matter: what the Hub reads
    assert meta["base_model"] == str(tiny_model_dir) and meta["library_name"] == "peft"
    assert {"tailorlm", "sft", "lora", "peft"} <= set(meta["tags"])
    (train,) = run.meta["datasets"]
    assert meta["datasets"] == [train["path"]]
    assert meta["dataset_fingerprints"] == {train["path"]: train["fingerprint"]}
    # data, recipe, metrics, canaries, lineage, usage
    assert f"| train | `{train['path']}` | {train['n_records']} | `{train['fingerprint']}` |" in body
    assert "method: lora" in body and "max_steps: 2" in body
    assert f"| train loss | {metrics['train_loss']:.4f} |" in body
    assert f"| eval loss | {metrics['eval_loss']:.4f} |" in body
    assert "| tokens/s |" in body and "| peak RSS (MB) |" in body
    c = metrics["canaries"]
    assert f"| {c['before']:.4f} | {c['after']:.4f} |" in body
    assert f"- run: `{run.id}`" in body and f"- parent: `{tiny_model_dir}`" in body
    if commit := (run.meta.get("git") or {}).get("commit"):
        assert commit in body
    assert f'PeftModel.from_pretrained(base, "{system.adapters[0].path}")' in body
    assert f"tailor generate --system {run.artifacts}" in body


def test_a_full_fine_tune_card_loads_with_plain_transformers(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir, "strategy.method=full", "canaries.enabled=false", "eval_fraction=0")
    with Run.create("full", root=tmp_path / "runs", config=recipe) as run:
        system = fit(recipe, run)
    meta, body = _card(run)
    assert meta["library_name"] == "transformers" and "peft" not in meta["tags"] and "full" in meta["tags"]
    assert f'AutoModelForCausalLM.from_pretrained("{system.model}")' in body
    assert "eval loss" not in body and "Forgetting canaries" not in body
