"""`tailor prompt render | eval | optimize` on a tiny model and a tiny classification task."""

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.system import System

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    words = ["good", "great", "fine", "bad", "awful", "poor"]
    rows = [
        {"id": f"r{i}", "text": f"a {words[i % 6]} film number {i}", "label": "positive" if i % 6 < 3 else "negative"}
        for i in range(36)
    ]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text(
        textwrap.dedent(
            """\
            name: tiny-sentiment
            eval: {path: eval.jsonl, fields: {input: text, reference: label}}
            metrics: [accuracy]
            generation: {max_new_tokens: 4}
            bootstrap: {resamples: 100}
            """
        )
    )
    program = {
        "system": "Classify the sentiment as positive or negative.",
        "few_shot": [{"input": "a nice film", "output": "positive"}, {"input": "a dull film", "output": "negative"}],
        "chain_of_thought": "Think first.",
        "answer": {"method": "label", "labels": ["negative", "positive"]},
        "self_consistency": {"n": 2, "temperature": 0.8},
    }
    (tmp_path / "program.yaml").write_text(yaml.safe_dump(program))
    return tmp_path


def test_render_shows_the_chat_templated_prompt(tiny_model_dir: Path, task_dir: Path) -> None:
    args = ["prompt", "render", "-t", str(task_dir / "task.yaml"), "-p", str(task_dir / "program.yaml")]
    res = runner.invoke(app, [*args, "-m", str(tiny_model_dir), "-i", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["text"].startswith("<|im_start|>system\nClassify the sentiment")
    assert out["text"].endswith("a great film number 1\nThink first.<|im_end|>\n<|im_start|>assistant\n")
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_eval_runs_cot_with_self_consistency(tiny_model_dir: Path, task_dir: Path, tmp_path: Path) -> None:
    args = ["prompt", "eval", "-t", str(task_dir / "task.yaml"), "-p", str(task_dir / "program.yaml")]
    res = runner.invoke(app, [*args, "-m", str(tiny_model_dir), "-n", "6", "--root", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    run_dir = Path(json.loads(res.stdout)["run"])
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6
    assert all(sum(p["votes"].values()) <= 2 and 0 <= p["agreement"] <= 1 for p in preds)
    saved = System.load(run_dir / "artifacts")
    assert saved.prompt is not None and saved.prompt.self_consistency.n == 2  # reusable by generate/chat


def test_optimize_reports_dev_and_held_out_test(tiny_model_dir: Path, task_dir: Path, tmp_path: Path) -> None:
    args = ["prompt", "optimize", "-t", str(task_dir / "task.yaml"), "-m", str(tiny_model_dir), "--budget", "3"]
    args += ["--k", "2", "--pool-size", "8", "--dev-size", "12", "--root", str(tmp_path / "runs"), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["dev"]) == set(out["test"]) == {"start", "best"}
    assert out["dev"]["best"] >= out["dev"]["start"]
    assert [c["name"] for c in out["candidates"]][:2] == ["start", "labelled-first-k"]
    summary = json.loads((Path(out["run"]) / "optimize.json").read_text())
    assert summary["splits"] == {"pool": 8, "dev": 12, "test": 16}
    evals = sorted(p.name.split("-", 2)[2] for p in (Path(out["run"]) / "evals").iterdir())
    assert "bootstrap" in evals and "dev-start" in evals and "test-start" in evals  # nested, named eval runs
    best = System.load(Path(out["run"]) / "artifacts")
    assert best.name.endswith("-optimized")


def test_too_small_eval_set_is_a_clear_error(tiny_model_dir: Path, task_dir: Path) -> None:
    args = ["prompt", "optimize", "-t", str(task_dir / "task.yaml"), "-m", str(tiny_model_dir), "--dev-size", "40"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "too few" in res.output
