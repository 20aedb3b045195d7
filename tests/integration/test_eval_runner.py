"""`tailor eval` end to end on a tiny model: run layout, caching, compare, errors. Resume after SIGKILL: the kill
harness (test_kill_harness.py)."""

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.system import System
from tailorlm.core.task import Task
from tailorlm.eval.runner import evaluate

pytestmark = pytest.mark.integration
runner = CliRunner()


def _write_task(folder: Path, n: int = 24) -> Path:
    rows = [
        {
            "question": f"What is {i} plus {i}?",
            "answer": [str(2 * i), f"{2 * i}."],
            "topic": "even" if i % 2 else "odd",
        }
        for i in range(n)
    ]
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "task.yaml").write_text(
        textwrap.dedent(
            """\
            name: tiny-sums
            eval: {path: eval.jsonl, fields: {input: question, reference: answer}}
            input_template: "Answer with a number. {{ input }}"
            metrics: [exact_match, f1, bleu]
            category_field: topic
            generation: {max_new_tokens: 6}
            bootstrap: {resamples: 200}
            """
        )
    )
    return folder / "task.yaml"


def test_eval_writes_the_run_layout(tiny_model_dir: Path, tmp_path: Path) -> None:
    task = Task.load(_write_task(tmp_path))
    result = evaluate(
        System(model=str(tiny_model_dir)), task, root=tmp_path / "runs", cache_dir=tmp_path / "c", progress=False
    )
    run_dir = Path(result.run.path)
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 24 and {"id", "input", "reference", "prediction", "scores", "category"} <= set(preds[0])
    assert preds[0]["input"].startswith("Answer with a number. What is 0 plus 0?")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("exact_match", "f1", "bleu"):
        m = metrics["metrics"][name]
        assert m["low"] <= m["value"] <= m["high"]
    assert set(metrics["by_category"]) == {"even", "odd"}
    assert metrics["cost"]["generated"] == 24
    assert (run_dir / "artifacts" / "system.yaml").is_file()
    recorded = json.loads((run_dir / "run.json").read_text())["datasets"]
    assert recorded[0]["name"] == "eval" and len(recorded[0]["fingerprint"]) == 64


def test_unchanged_eval_is_served_from_cache(tiny_model_dir: Path, tmp_path: Path) -> None:
    task = Task.load(_write_task(tmp_path))
    system = System(model=str(tiny_model_dir))
    kw = {"root": tmp_path / "runs", "cache_dir": tmp_path / "cache", "progress": False}
    first = evaluate(system, task, **kw)
    second = evaluate(system, task, **kw)
    assert second.generated == 0
    assert second.metrics["cost"]["load_s"] == 0.0  # nothing to generate: the model is never loaded
    assert second.metrics["metrics"] == first.metrics["metrics"]


def test_cli_eval_and_compare(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))
    task_path = _write_task(tmp_path)
    root = str(tmp_path / "runs")
    a = runner.invoke(app, ["eval", str(tiny_model_dir), "--task", str(task_path), "--root", root, "--json"])
    assert a.exit_code == 0, a.output
    system = System(model=str(tiny_model_dir), prompt={"system": "Reply with digits only."})
    sys_path = system.save(tmp_path / "sys")
    b = runner.invoke(app, ["eval", str(sys_path), "-t", str(task_path), "--root", root, "--json", "eval.limit=20"])
    assert b.exit_code == 0, b.output
    run_a, run_b = json.loads(a.stdout)["run"], json.loads(b.stdout)["run"]
    cmp = runner.invoke(app, ["eval", "compare", run_a, run_b, "--root", root, "--json"])
    assert cmp.exit_code == 0, cmp.output
    result = json.loads(cmp.stdout)
    assert result["n_shared"] == 20
    assert {r["metric"] for r in result["metrics"]} == {"exact_match", "f1", "bleu"}
    for row in result["metrics"]:
        assert 0.0 <= row["p_value"] <= 1.0 and row["low"] <= row["diff"] <= row["high"]
        assert row["diff"] == pytest.approx(row["b"] - row["a"])  # B − A, for per-example and corpus metrics


def test_bad_task_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text("name: t\neval: {path: e.jsonl}\nmetrcs: [f1]\n")
    res = runner.invoke(app, ["eval", "default", "--task", str(tmp_path / "task.yaml")])
    assert res.exit_code == 1
    assert "metrcs" in res.output and "metrics" in res.output
    (tmp_path / "task.yaml").write_text("name: t\neval: {path: e.jsonl}\nmetrics: [f1x]\n")
    res = runner.invoke(app, ["eval", "default", "--task", str(tmp_path / "task.yaml")])
    assert res.exit_code == 1 and "f1x" in res.output


def test_malformed_eval_file_names_file_and_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    task_path = _write_task(tmp_path)
    with open(tmp_path / "eval.jsonl", "a") as f:
        f.write("{not json\n")
    res = runner.invoke(app, ["eval", str(tiny_model_dir), "--task", str(task_path), "--root", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "eval.jsonl:25" in res.output


def test_canaries_flag_a_system_that_forgets(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tailorlm.core.system import AdapterSpec

    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=512, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    task_path = _write_task(tmp_path, n=4)
    with open(task_path, "a") as f:
        f.write("canaries: {enabled: true, limit: 12, max_drop: 0.0}\n")
    task = Task.load(task_path)
    kw = {"root": tmp_path / "runs", "cache_dir": tmp_path / "cache", "progress": False}

    base = evaluate(System(model=str(tiny_model_dir)), task, **kw).metrics
    assert base["canaries"]["drop"] == 0.0 and base["promotable"] is True

    tuned = System(model=str(tiny_model_dir), adapters=[AdapterSpec(path=str(tmp_path / "adapter"))])
    result = evaluate(tuned, task, **kw).metrics["canaries"]
    assert result["before"] == base["canaries"]["after"]  # the base score is shared through the cache
    assert result["promotable"] == (result["drop"] <= 0.0)
    assert (Path(kw["cache_dir"]) / "canaries").is_dir()
