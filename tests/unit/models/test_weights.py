"""Weights load from safetensors only; a pickle checkpoint is refused unless TAILOR_ALLOW_PICKLE=1."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from tailorlm.errors import ConfigError, ModelNotFoundError
from tailorlm.models.weights import ALLOW_PICKLE_ENV, pickle_only_files, refuse_pickle_weights, safetensors_kwargs

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[3] / "src" / "tailorlm"


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)


@pytest.fixture(scope="module")
def pickle_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights as ``pytorch_model.bin`` only (what ``safe_serialization=False`` wrote in
    transformers 4; transformers 5 no longer writes pickles, so torch.save does it)."""
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("pickle-model") / "model"
    shutil.copytree(tiny_model_dir, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_pickle_only_model_is_refused_with_the_file_and_the_way_out(pickle_model_dir: Path) -> None:
    from tailorlm.models.load import load_model

    with pytest.raises(ConfigError) as info:
        load_model(str(pickle_model_dir), device="cpu", dtype=torch.float32)
    text = str(info.value)
    assert str(pickle_model_dir / "pytorch_model.bin") in text
    assert "pickle checkpoint, which can run code when loaded" in text
    assert "convert it to safetensors" in text and "save_pretrained" in text
    assert f"{ALLOW_PICKLE_ENV}=1" in text and "--allow-pickle" in text


def test_opt_in_loads_the_pickle_model(pickle_model_dir: Path, tiny_model_dir: Path, monkeypatch) -> None:
    from tailorlm.models.load import load_model

    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    loaded = load_model(str(pickle_model_dir), device="cpu", dtype=torch.float32)
    reference = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), reference.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_safetensors_model_loads_as_before(tiny_model_dir: Path) -> None:
    from tailorlm.models.load import load_model

    assert load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32).model is not None


def test_transformers_itself_refuses_the_pickle_when_our_check_is_bypassed(pickle_model_dir: Path) -> None:
    # The hub-id path has no folder for us to inspect: use_safetensors=True must make transformers refuse instead.
    from transformers import AutoModelForCausalLM

    assert safetensors_kwargs() == {"use_safetensors": True}
    with pytest.raises(OSError, match="safetensors"):
        AutoModelForCausalLM.from_pretrained(pickle_model_dir, **safetensors_kwargs())


def test_pickle_adapter_is_refused_and_loads_with_the_opt_in(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tailorlm.core.system import AdapterSpec
    from tailorlm.models.adapters import apply_adapters
    from tailorlm.models.load import load_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter", safe_serialization=False)
    assert (tmp_path / "adapter" / "adapter_model.bin").is_file()
    spec = AdapterSpec(path=str(tmp_path / "adapter"))

    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "adapter" / "adapter_model.bin"))) as info:
        apply_adapters(load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32), [spec])
    assert "PeftModel.from_pretrained" in str(info.value)

    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    loaded = apply_adapters(load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32), [spec])
    trained = {k.replace(".default", ""): v for k, v in peft_model.state_dict().items() if "lora_" in k}
    restored = {k.replace(".adapter", ""): v for k, v in loaded.model.state_dict().items() if "lora_" in k}
    assert trained.keys() == restored.keys() and trained
    assert all(torch.equal(trained[k], restored[k]) for k in trained)


def test_safetensors_adapter_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tailorlm.core.system import AdapterSpec
    from tailorlm.models.adapters import apply_adapters
    from tailorlm.models.load import load_model

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2))
    peft_model.save_pretrained(tmp_path / "adapter")
    spec = AdapterSpec(path=str(tmp_path / "adapter"))
    assert apply_adapters(load_model(str(tiny_model_dir), device="cpu"), [spec]).extra["adapters"] == ["adapter"]


def test_module_subfolders_count_but_trainer_state_and_checkpoints_do_not(tmp_path: Path) -> None:
    # A sentence-transformers folder: the transformer at the root (safetensors), a Dense module with only a pickle.
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "pytorch_model.bin").write_bytes(b"")
    # Trainer state is read with weights_only=True and never as weights; a checkpoint is not part of the model.
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "pytorch_model.bin").write_bytes(b"")
    assert pickle_only_files(tmp_path) == [tmp_path / "2_Dense" / "pytorch_model.bin"]
    assert pickle_only_files(tmp_path, depth=0) == []
    with pytest.raises(ConfigError, match="2_Dense"):
        refuse_pickle_weights(tmp_path, kind="embedder")
    # A pickle beside a safetensors file is never read (every loader prefers safetensors): no refusal.
    (tmp_path / "2_Dense" / "model.safetensors").write_bytes(b"")
    refuse_pickle_weights(tmp_path, kind="embedder")


def test_sharded_pickles_are_found_and_missing_folders_pass(tmp_path: Path) -> None:
    for name in ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"):
        (tmp_path / name).write_bytes(b"")
    assert len(pickle_only_files(tmp_path)) == 2
    refuse_pickle_weights(tmp_path / "absent")  # a hub id or missing folder: the loader reports it
    refuse_pickle_weights("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_the_packaged_embedder_is_safetensors() -> None:
    from tailorlm.prompting.embed import default_embedder_dir

    try:
        folder = default_embedder_dir()
    except ModelNotFoundError as err:  # not installed: the embedder tests skip for the same reason
        pytest.skip(str(err))
    assert pickle_only_files(folder) == []


def test_source_never_unpickles_unrestricted() -> None:
    # Our own code must not call torch.load / pickle.load(s) / joblib.load; if one becomes necessary it must pass
    # weights_only=True on the same line (and be added here deliberately).
    pattern = re.compile(r"\b(torch\.load|pickle\.loads?|joblib\.load|dill\.loads?|cloudpickle\.loads?)\(")
    offenders = []
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_cli_flag_sets_the_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from typer.testing import CliRunner

    from tailorlm.cli.main import app

    monkeypatch.setenv(ALLOW_PICKLE_ENV, "0")  # recorded, so the flag's "1" is undone after the test
    result = CliRunner().invoke(app, ["--allow-pickle", "runs", "list", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert os.environ[ALLOW_PICKLE_ENV] == "1"
