"""`tailor feedback export`, `tailor ab report` and `tailor ab promote` on a real SQLite store, through the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.serve.store import FeedbackRecord, ResponseRecord, open_store

pytestmark = pytest.mark.integration

SERVE_YAML = """\
host: 127.0.0.1          # the server's keys are not read by `tailor ab`
experiments:
  - name: assistant
    arms:
      a: {system: terse}
      b: {system: friendly, weight: 1}
    shadow: [candidate]
"""


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Simulated users who prefer arm b's answers: thumbs and pairwise choices, plus a shadow System."""
    path = tmp_path / "feedback.sqlite"
    store = open_store(path)
    now = time.time() - 60
    for i in range(40):
        q = {"messages": [{"role": "user", "content": f"question {i}"}]}
        ids = {}
        for arm, system, answer in (("a", "terse", f"A{i}."), ("b", "friendly", f"Happy to help: B{i}!")):
            ids[arm] = f"chatcmpl-{arm}{i}"
            store.record_response(
                ResponseRecord(
                    id=ids[arm],
                    created=now + i,
                    model="assistant",
                    system=system,
                    experiment="assistant",
                    arm=arm,
                    user=f"u{i}",
                    request=q,
                    response=answer,
                    latency_ms=100.0 + i,
                )
            )
        store.record_response(
            ResponseRecord(
                id=f"shadow-{i}",
                created=now + i,
                model="assistant",
                system="candidate",
                experiment="assistant",
                shadow=True,
                request=q,
                response="C",
            )
        )
        store.record_feedback(FeedbackRecord(response_id=ids["a"], rating="up" if i % 3 == 0 else "down"))
        store.record_feedback(FeedbackRecord(response_id=ids["b"], rating="down" if i % 5 == 0 else "up"))
        store.record_feedback(
            FeedbackRecord(response_id=ids["a"], compare_to=ids["b"], choice="other" if i % 4 else "this")
        )
    store.close()
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_export_then_validate(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    code, output = run("feedback", "export", "--store", str(store_path), "--out", str(out), "--since", "-1d")
    assert code == 0, output
    assert "preference.jsonl" in output and "binary.jsonl" in output
    code, output = run("feedback", "export", "--store", str(store_path), "--out", str(out), "--json")
    counts = json.loads(output)
    assert (counts["preference"], counts["binary"], counts["sft"]) == (40, 80, 0)
    for name in ("preference.jsonl", "binary.jsonl"):
        code, output = run("data", "validate", str(out / name), "--tokenizer", "none")
        assert code == 0 and "dataset is valid" in output, output
    code, output = run("feedback", "export", "--store", str(store_path), "--out", str(out), "--since", "last tuesday")
    assert code == 1 and "cannot read the time" in output


def test_ab_report_and_promote(store_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(SERVE_YAML)
    store = str(store_path)
    code, output = run("ab", "report", "--store", store, "--experiment", "assistant", "--config", str(config))
    assert code == 0, output
    assert "arm b preferred: up-rate 0.80 vs 0.35 (a)" in " ".join(output.split())
    assert "candidate" in output  # the shadow System's own table
    code, output = run("ab", "report", "--store", store, "-e", "assistant", "--since", "-1h", "--json")
    report = json.loads(output)
    assert (report["winner"], report["decided"], [s["system"] for s in report["shadow"]]) == ("b", True, ["candidate"])
    assert {c["metric"] for c in report["comparisons"]} == {"up_rate", "pairwise"}
    code, output = run("ab", "promote", "--store", store, "--experiment", "assistant", "--config", str(config))
    assert code == 0 and "friendly" in output, output
    assert open_store(store_path).promoted("assistant") == "friendly"
    code, output = run("ab", "promote", "--store", store, "-e", "assistant", "--arm", "a")  # no config: stored Systems
    assert code == 0 and open_store(store_path).promoted("assistant") == "terse"


def test_ab_errors(store_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(SERVE_YAML)
    code, output = run("ab", "report", "--store", str(store_path), "-e", "nope", "--config", str(config))
    assert code == 1 and "has no experiment 'nope'" in output and "assistant" in output
    code, output = run("ab", "promote", "--store", str(tmp_path / "empty.sqlite"), "-e", "assistant")
    assert code == 1 and "cannot promote 'assistant': too small to decide" in output and "--arm" in output
