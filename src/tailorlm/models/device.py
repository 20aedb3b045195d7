"""Pick the device and dtype a model runs in: automatic by default, overridable by name."""

from __future__ import annotations

from typing import Literal

import torch

from tailorlm.core.cpu import cpu_info
from tailorlm.errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def pick_device(device: str | None = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple MPS, then CPU. A named device that is absent is an error."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available", hint="use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available", hint="use --device cpu or auto")
    return dev


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = "auto") -> torch.dtype:
    """``auto``: bf16 on GPUs that support it (else fp16), fp32 on CPU and MPS.

    CPU stays fp32 by default so that evaluation numbers do not depend on whether a CPU has AMX; bf16 on CPU
    is a deliberate opt-in (it is several times faster for training on AMX machines, see DESIGN.md).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}", hint=f"choose one of: auto, {', '.join(DTYPES)}") from None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16, AMX, ARM BF16); elsewhere bf16 is emulated and
    several times slower than fp32. ``TAILOR_CPU_CAPS``/``ONEDNN_MAX_CPU_ISA`` can hide it (core/cpu.py)."""
    return cpu_info().native_bf16


def training_bf16(precision: str = "auto") -> bool:
    """Train in bf16 autocast? ``auto``: on GPUs with bf16 and on CPUs with native bf16 matmuls.

    Training, unlike evaluation, defaults to bf16 on such CPUs: the matmuls run ~3x faster and the loss matches
    fp32 closely (the trained parameters and optimizer state stay fp32; benchmarks/sft_throughput.py measures both).
    """
    if precision == "fp32":
        return False
    supported = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_native_bf16()
    if precision == "bf16":
        if not supported:
            raise ConfigError(
                f"training.precision=bf16 but this machine has no native bf16 ({cpu_info().model}, {cpu_info().isa}; "
                "needs AVX512-BF16/AMX or a bf16 GPU): emulated bf16 trains several times slower than fp32",
                hint="use training.precision=auto or fp32",
            )
        return True
    return supported
