"""CPU capability detection and the caps that let any machine test the AVX2-only fallback."""

from __future__ import annotations

import pytest

from tailorlm.core import cpu
from tailorlm.errors import ConfigError
from tailorlm.models.device import training_bf16

pytestmark = [pytest.mark.unit, pytest.mark.isa]

AMX_XEON = ("Intel(R) Xeon(R) Platinum 8480+", "x86_64", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"})
AVX2_EPYC = ("AMD EPYC", "x86_64", {"avx2"})


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def use(detected: tuple[str, str, set[str]], **env: str) -> None:
        monkeypatch.setattr(cpu, "_detected", lambda: detected)
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
        for name in (cpu.CAPS_ENV, cpu.ONEDNN_ENV):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return use


def test_amx_machine_reports_native_bf16_and_int8(machine) -> None:  # type: ignore[no-untyped-def]
    machine(AMX_XEON)
    info = cpu.cpu_info()
    assert info.native_bf16 and info.int8_dot and info.isa == "amx" and info.cap is None
    assert training_bf16("auto") is True


def test_avx2_machine_trains_fp32_on_auto_and_refuses_bf16(machine) -> None:  # type: ignore[no-untyped-def]
    machine(AVX2_EPYC)
    info = cpu.cpu_info()
    assert not info.native_bf16 and not info.int8_dot and info.isa == "avx2"
    assert training_bf16("auto") is False
    with pytest.raises(ConfigError, match=r"no native bf16.*AMD EPYC"):
        training_bf16("bf16")


@pytest.mark.parametrize(
    ("env", "value", "isa", "bf16", "int8"),
    [
        (cpu.CAPS_ENV, "avx2", "avx2", False, False),
        (cpu.CAPS_ENV, "AVX512_CORE", "avx512", False, False),
        (cpu.CAPS_ENV, "avx512_core_vnni", "avx512-vnni", False, True),
        (cpu.ONEDNN_ENV, "AVX2", "avx2", False, False),  # a capped oneDNN never uses the bf16 hardware
        (cpu.CAPS_ENV, "native", "amx", True, True),
        (cpu.CAPS_ENV, "no-such-isa", "amx", True, True),  # ignored, as oneDNN ignores unknown names
    ],
)
def test_caps_hide_what_a_smaller_cpu_lacks(machine, env: str, value: str, isa: str, bf16: bool, int8: bool) -> None:  # type: ignore[no-untyped-def]
    machine(AMX_XEON, **{env: value})
    info = cpu.cpu_info()
    assert (info.isa, info.native_bf16, info.int8_dot) == (isa, bf16, int8)
    assert training_bf16("auto") is bf16


def test_the_tighter_of_two_caps_wins(machine) -> None:  # type: ignore[no-untyped-def]
    machine(AMX_XEON, **{cpu.CAPS_ENV: "avx512_core_bf16", cpu.ONEDNN_ENV: "AVX2"})
    assert cpu.cpu_info().cap == "avx2"


def test_arm_bf16_counts_as_native(machine) -> None:  # type: ignore[no-untyped-def]
    machine(("Neoverse-V1", "aarch64", {"bf16", "i8mm"}))
    info = cpu.cpu_info()
    assert info.native_bf16 and info.int8_dot and info.isa == "arm-bf16"
    machine(("Neoverse-V1", "aarch64", {"bf16", "i8mm"}), **{cpu.CAPS_ENV: "avx2"})
    assert not cpu.cpu_info().native_bf16


def test_as_dict_is_what_benchmarks_record(machine) -> None:  # type: ignore[no-untyped-def]
    machine(AVX2_EPYC, **{cpu.CAPS_ENV: "avx2"})
    d = cpu.cpu_info().as_dict()
    assert d["model"] == "AMD EPYC" and d["flags"] == ("avx2",) and d["cap"] == "avx2"
    assert {"native_bf16", "int8_dot", "isa", "cores", "arch"} <= set(d)


def test_real_cpuinfo_parses() -> None:
    info = cpu.cpu_info()
    assert info.model and info.arch and set(info.flags) <= {*cpu.X86_FLAGS, "bf16", "i8mm", "asimddp"}
