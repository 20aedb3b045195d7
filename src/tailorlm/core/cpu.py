"""What this CPU can do for us, detected at run time: its model name and the instruction sets that change speed.

The machines this project runs on differ (DESIGN.md): an AVX2-only EPYC, an AVX-512 EPYC with bf16 and VNNI, a
Xeon with AMX, laptops, Apple and ARM servers. Two features decide which path is fastest:

- **native bf16** (AVX512-BF16, AMX, ARMv8.6 BF16): bf16 matmuls run several times faster than fp32. Elsewhere
  bf16 is emulated and several times *slower*, so bf16 training is only ever chosen where it is native.
- **int8 dot products** (AVX512-VNNI, AVX-VNNI, AMX-INT8, ARM i8mm/dotprod): the int8 embedder's speed-up over fp32.

``TAILOR_CPU_CAPS`` caps what is reported, so that a machine *with* these features can test the fallback a user
without them gets. It takes oneDNN's ISA names (``avx2``, ``avx512_core``, ``avx512_core_vnni``,
``avx512_core_bf16``, ``avx512_core_amx``, ``native``); ``ONEDNN_MAX_CPU_ISA`` is honoured the same way, because a
capped oneDNN computes bf16 without the hardware even where the hardware has it. Pure Python: no torch import.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

CAPS_ENV = "TAILOR_CPU_CAPS"
ONEDNN_ENV = "ONEDNN_MAX_CPU_ISA"

# /proc/cpuinfo flags that matter, in the order of the ISA levels that unlock them.
X86_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# The flags each cap (oneDNN's ISA names, lower-cased) lets through; anything above is hidden.
_CAP_ALLOWS: dict[str, frozenset[str]] = {
    "sse41": frozenset(),
    "avx": frozenset(),
    "avx2": frozenset({"avx2"}),
    "avx2_vnni": frozenset({"avx2", "avx_vnni"}),
    "avx2_vnni_2": frozenset({"avx2", "avx_vnni"}),
    "avx512_core": frozenset({"avx2", "avx_vnni", "avx512f"}),
    "avx512_core_vnni": frozenset({"avx2", "avx_vnni", "avx512f", "avx512_vnni"}),
    "avx512_core_bf16": frozenset({"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16"}),
    "avx10_1_512": frozenset({"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16"}),
    "avx512_core_amx": frozenset(X86_FLAGS),
    "avx10_1_512_amx": frozenset(X86_FLAGS),
    "avx10_1_512_amx_fp16": frozenset(X86_FLAGS),
    "native": frozenset(X86_FLAGS),
    "all": frozenset(X86_FLAGS),
    "default": frozenset(X86_FLAGS),
}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    cores: int | None
    flags: tuple[str, ...]  # the ones in X86_FLAGS (or ARM's bf16/i8mm/asimddp) this CPU has, after any cap
    cap: str | None  # the cap in force (TAILOR_CPU_CAPS or ONEDNN_MAX_CPU_ISA), if any

    @property
    def native_bf16(self) -> bool:
        return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(self.flags))

    @property
    def int8_dot(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8", "i8mm", "asimddp"} & set(self.flags))

    @property
    def isa(self) -> str:
        """One word for tables: the highest level the flags reach."""
        f = set(self.flags)
        if self.arch in ("aarch64", "arm64"):
            return "arm-bf16" if "bf16" in f else "arm"
        for name, needs in (("amx", "amx_bf16"), ("avx512-bf16", "avx512_bf16"), ("avx512-vnni", "avx512_vnni"),
                            ("avx512", "avx512f"), ("avx2", "avx2")):  # fmt: skip
            if needs in f:
                return name
        return "baseline"

    def as_dict(self) -> dict[str, Any]:
        """For benchmark JSON and run.json: every figure says which CPU and which path produced it."""
        return {**asdict(self), "native_bf16": self.native_bf16, "int8_dot": self.int8_dot, "isa": self.isa}


def _read_cpuinfo() -> tuple[str, set[str]]:
    try:
        text = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()  # noqa: SIM115 - read once
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def _darwin() -> tuple[str, set[str]]:
    def sysctl(name: str) -> str:
        try:
            out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2, check=False)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    flags = {f for f, key in (("bf16", "hw.optional.arm.FEAT_BF16"), ("i8mm", "hw.optional.arm.FEAT_I8MM"),
                              ("asimddp", "hw.optional.arm.FEAT_DotProd")) if sysctl(key) == "1"}  # fmt: skip
    return sysctl("machdep.cpu.brand_string"), flags


def parse_cap(value: str | None) -> str | None:
    """The cap named by an env var value, lower-cased; unknown names are ignored (oneDNN ignores them too)."""
    if not value:
        return None
    name = value.strip().lower()
    return name if name in _CAP_ALLOWS else None


def _tightest(caps: list[str]) -> str | None:
    caps = [c for c in caps if c not in ("native", "all", "default")]
    return min(caps, key=lambda c: len(_CAP_ALLOWS[c])) if caps else None


@functools.cache
def _detected() -> tuple[str, str, set[str]]:
    arch = platform.machine().lower()
    model, flags = _darwin() if platform.system() == "Darwin" else _read_cpuinfo()
    if arch in ("x86_64", "amd64", "i686"):
        flags &= set(X86_FLAGS)
    else:
        flags &= {"bf16", "i8mm", "asimddp"}
    return model or platform.processor() or "unknown", arch, flags


def cpu_info() -> CpuInfo:
    """This CPU, with ``TAILOR_CPU_CAPS`` / ``ONEDNN_MAX_CPU_ISA`` applied (read each call: tests set them)."""
    model, arch, flags = _detected()
    cap = _tightest([c for c in (parse_cap(os.environ.get(CAPS_ENV)), parse_cap(os.environ.get(ONEDNN_ENV))) if c])
    if cap is not None:
        # A cap also hides ARM's features: "no bf16, no int8 dot" is what a capped run is for.
        flags = flags & _CAP_ALLOWS[cap]
    return CpuInfo(model=model, arch=arch, cores=os.cpu_count(), flags=tuple(sorted(flags)), cap=cap)


def machine() -> dict[str, Any]:
    """What every benchmark's JSON records, so that figures from two machines are never compared blindly: the CPU,
    its ISA flags and caps, whether bf16 training would be native, and torch's thread count."""
    import sys

    info = cpu_info().as_dict()
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["training_precision_auto"] = "bf16" if info["native_bf16"] else "fp32"
    return info
