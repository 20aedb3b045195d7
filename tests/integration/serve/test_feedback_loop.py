"""The loop end to end: two Systems served as an A/B experiment, simulated users who prefer one known kind of
answer (the longer one), their feedback exported into files `tailor data validate` accepts, `tailor ab report`
naming the preferred arm with its CI, and `tailor ab promote` switching the experiment's traffic to it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from serve_harness import serving
from tailorlm.cli.main import app
from tailorlm.core.system import System
from tailorlm.serve.config import ServeConfig
from tailorlm.serve.server import build_state

pytestmark = pytest.mark.integration
USERS = 48


def test_ab_feedback_export_report_promote(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Two Systems on one base: "short" answers in at most 2 tokens, "long" in up to 10. Users prefer long answers.
    # Sampled, because the random tiny model's greedy answer is only newlines, which no exported record may be.
    systems = [
        System(name="short", model=str(tiny_model_dir), generation={"max_new_tokens": 2, "temperature": 1.0}),
        System(name="long", model=str(tiny_model_dir), generation={"max_new_tokens": 10, "temperature": 1.0}),
    ]
    serve_yaml = tmp_path / "serve.yaml"
    store = str(tmp_path / "feedback.db")
    experiment = {"name": "support", "arms": {"a": {"system": "short"}, "b": {"system": "long"}}, "min_samples": 10}
    serve_yaml.write_text(yaml.safe_dump({"store": store, "experiments": [experiment]}), encoding="utf-8")
    cfg = ServeConfig.load(serve_yaml, [f"keys_file={tmp_path / 'keys.json'}"])
    state = build_state(cfg, systems=systems)
    runner = CliRunner()
    with serving(state) as base:
        arms: dict[str, str] = {}
        for u in range(USERS):
            user = f"user-{u}"
            r = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "support", "user": user, "messages": [{"role": "user", "content": f"question {u}"}]},
                timeout=60,
            ).json()
            arms[user] = r["system_fingerprint"]
            answer = r["choices"][0]["message"]["content"]
            liked = r["usage"]["completion_tokens"] > 4
            feedback = {"response_id": r["id"], "rating": "up" if liked else "down", "user": user}
            if not liked and u % 3 == 0:  # some users also write the longer answer they wanted
                feedback["edited"] = answer + " and a fuller explanation of it"
            assert httpx.post(f"{base}/v1/feedback", json=feedback, timeout=30).status_code == 201
        assert set(arms.values()) == {"short", "long"}, "both arms should get traffic"

        # Export: edits become SFT and preference pairs, thumbs become binary feedback; all validate.
        out = tmp_path / "export"
        result = runner.invoke(app, ["feedback", "export", "--store", store, "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
        counts = json.loads(result.stdout)
        # A sampled answer can be blank, which is not a trainable record: the export skips it.
        assert counts["preference"] > 0 and counts["binary"] >= USERS - 4, counts
        for name in ("preference.jsonl", "binary.jsonl", "sft.jsonl"):
            check = runner.invoke(app, ["data", "validate", str(out / name)])
            assert check.exit_code == 0, (name, check.output)

        # The report names arm b (the long answers) with its CI.
        report = runner.invoke(
            app, ["ab", "report", "--store", store, "--experiment", "support", "--config", str(serve_yaml), "--json"]
        )
        assert report.exit_code == 0, report.output
        decided = json.loads(report.stdout)
        assert decided["winner"] == "b" and decided["decided"], decided["reason"]

        # Promote it: after the promotion is seen, users of arm a get the long System too.
        promoted = runner.invoke(
            app, ["ab", "promote", "--store", store, "--experiment", "support", "--config", str(serve_yaml)]
        )
        assert promoted.exit_code == 0, promoted.output
        time.sleep(2.2)  # the server re-reads promotions every 2 s (serve/state.py)
        user_a = next(u for u, s in arms.items() if s == "short")
        r = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "support", "user": user_a, "messages": [{"role": "user", "content": "again"}]},
            timeout=60,
        ).json()
        assert r["system_fingerprint"] == "long"
