"""scripts/check_install.py: no CUDA build and nothing compiled here, in the installed distributions and in a
resolution report."""

from __future__ import annotations

import importlib.util
from importlib.metadata import PathDistribution
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_install.py"


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_install", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dist(root: Path, name: str, ver: str, tag: str = "py3-none-any", files: dict[str, str] | None = None):
    info = root / f"{name.replace('-', '_')}-{ver}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n")
    (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.45.1)\nTag: {tag}\n")
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return PathDistribution(info)


CPU_TORCH_VERSION_PY = "__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\nhip: Optional[str] = None\n"


def test_a_cpu_wheels_only_install_is_clean(check: ModuleType, tmp_path: Path) -> None:
    dists = [
        _dist(
            tmp_path,
            "torch",
            "2.13.0+cpu",
            "cp311-cp311-manylinux_2_28_x86_64",
            {"torch/version.py": CPU_TORCH_VERSION_PY},
        ),
        _dist(tmp_path, "numpy", "2.4.6", "cp311-cp311-manylinux_2_27_x86_64"),
        _dist(tmp_path, "rouge_score", "0.1.2"),  # built from its sdist, but pure Python: indistinguishable, fine
    ]
    assert check.installed_problems(dists, allow_gpu=False) == []


def test_cuda_packages_and_gpu_torch_builds_are_found(check: ModuleType, tmp_path: Path) -> None:
    dists = [
        _dist(tmp_path / "a", "nvidia-cublas-cu12", "12.8.4.1", "py3-none-manylinux_2_27_x86_64"),
        _dist(tmp_path / "b", "triton", "3.5.0", "cp311-cp311-manylinux_2_27_x86_64"),
        _dist(tmp_path / "c", "torch", "2.13.0+cu128", "cp311-cp311-manylinux_2_28_x86_64"),
        # PyPI's default Linux torch has no local suffix: torch/version.py tells.
        _dist(tmp_path / "d", "torch", "2.13.0", files={"torch/version.py": "cuda: Optional[str] = '12.8'\n"}),
    ]
    problems = check.installed_problems(dists, allow_gpu=False)
    assert any("nvidia-cublas-cu12" in p for p in problems)
    assert any(p.startswith("triton ") for p in problems)
    assert any("2.13.0+cu128 is a GPU build" in p for p in problems)
    assert any("built for CUDA 12.8" in p for p in problems)
    assert check.installed_problems(dists, allow_gpu=True) == []  # TAILOR_GPU_INSTALL=1: a GPU machine on purpose


def test_a_wheel_compiled_here_is_found(check: ModuleType, tmp_path: Path) -> None:
    # What pip installs after compiling an sdist: the bare platform tag, which no PyPI upload carries.
    dists = [_dist(tmp_path, "llama-cpp-python", "0.3.16", "cp311-cp311-linux_x86_64")]
    (problem,) = check.installed_problems(dists, allow_gpu=False)
    assert "compiled on this machine" in problem and "linux_x86_64" in problem


def test_a_resolution_report_allows_wheels_the_editable_project_and_known_pure_sdists(check: ModuleType) -> None:
    def item(name: str, ver: str, url: str, editable: bool = False) -> dict:
        info: dict = {"url": url}
        if editable:
            info["dir_info"] = {"editable": True}
        return {"metadata": {"name": name, "version": ver}, "download_info": info}

    report = {
        "install": [
            item("torch", "2.13.0+cpu", "file:///opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"),
            item("tailorlm", "0.1.0", "file:///work/main", editable=True),
            item("rouge_score", "0.1.2", "https://files.example/rouge_score-0.1.2.tar.gz"),
        ]
    }
    problems, notes = check.report_problems(report, allow_gpu=False)
    assert problems == [] and len(notes) == 1 and "rouge-score" in notes[0]

    report["install"] += [
        item("llama-cpp-python", "0.3.16", "https://files.example/llama_cpp_python-0.3.16.tar.gz"),
        item("nvidia-cudnn-cu12", "9.10", "https://files.example/nvidia_cudnn_cu12-9.10-py3-none-manylinux.whl"),
    ]
    problems, _ = check.report_problems(report, allow_gpu=False)
    assert len(problems) == 2
    assert any("llama-cpp-python" in p and "built from source" in p for p in problems)
    assert any("nvidia-cudnn-cu12" in p and "CUDA" in p for p in problems)


def test_this_install_is_clean(check: ModuleType) -> None:
    # The venv the tests run in was made by `make setup`: CPU torch, wheels only (TAILOR_GPU_INSTALL=1 on a GPU box).
    assert check.installed_problems() == []


def test_the_lock_has_no_cuda_package_and_pins_torch_as_the_makefile(check: ModuleType, tmp_path: Path) -> None:
    assert check.lock_problems() == []
    bad = tmp_path / "constraints.txt"
    bad.write_text("# header\ntorch==2.13.0+cpu\nnvidia-nccl-cu12==2.27.3\nnumpy>=2\n")
    problems = check.lock_problems(bad)
    assert any("nvidia-nccl-cu12" in p for p in problems)
    assert any("torch==2.13.0+cpu" in p and "Makefile torch==2.13.0" in p for p in problems)
    assert any("not an exact pin" in p for p in problems)
