"""`tailor data augment` through the real command table: synonym (no model) and paraphrase by an OpenAI-protocol
System (the repo's stub server), and the output trains like any chat file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openai_stub import OpenAIStub  # tests/ is on sys.path
from tailorlm.cli.main import app
from tailorlm.core.system import System
from tailorlm.data import load_dataset

pytestmark = pytest.mark.integration

runner = CliRunner()


def _alpaca(path: Path) -> Path:
    rows = [
        {"instruction": "Explain the main idea of this story.", "output": "It is about a trip."},
        {"instruction": "Give an example of a big mistake.", "output": "Forgetting the keys."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_synonym_augment_writes_tagged_openai_records(tmp_path: Path) -> None:
    out = tmp_path / "aug.jsonl"
    result = runner.invoke(
        app, ["data", "augment", str(_alpaca(tmp_path / "in.jsonl")), "--out", str(out), "-m", "synonym", "--n", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "made" in result.stdout
    ds = load_dataset(out)
    # Alpaca in, canonical chat out: the 2 originals, then up to 2×2 copies (a copy equal to its sibling is skipped)
    assert ds.format == "openai" and 5 <= len(ds) <= 6
    assert [bool(s) for s in ds.augmented_sources] == [False, False] + [True] * (len(ds) - 2)


def test_paraphrase_through_an_openai_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_KEY", "not-a-secret")
    with OpenAIStub() as stub:
        System(
            model="stub-model", engine="openai", engine_options={"base_url": stub.base_url, "api_key_env": "STUB_KEY"}
        ).save(tmp_path / "teacher")
        out = tmp_path / "aug.jsonl"
        result = runner.invoke(
            app,
            [
                *("data", "augment", str(_alpaca(tmp_path / "in.jsonl")), "-o", str(out), "-m", "paraphrase"),
                *("--system", str(tmp_path / "teacher"), "--no-originals"),
            ],
        )
        assert result.exit_code == 0, result.output
        sent = [r.body["messages"][-1]["content"] for r in stub.requests if r.body and "messages" in r.body]
    assert len(sent) == 2 and all(s.startswith("Paraphrase the text below") for s in sent)
    ds = load_dataset(out)
    assert len(ds) == 2 and all(r.metadata["augmented"]["method"] == "paraphrase" for r in ds)
    assert all(r.metadata["augmented"]["engine"] for r in ds)


def test_paraphrase_without_a_model_is_refused(tmp_path: Path) -> None:
    path = _alpaca(tmp_path / "in.jsonl")
    result = runner.invoke(app, ["data", "augment", str(path), "-o", str(tmp_path / "o.jsonl"), "-m", "paraphrase"])
    assert result.exit_code == 1 and "needs a model" in result.output
