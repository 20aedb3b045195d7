"""Check that the install is the CPU-only, wheels-only one that `make setup` promises (docs/install.md).

Three checks, each a function the tests call too (``lock_problems()`` also checks ``constraints.txt`` itself):

- ``installed_problems()`` reads the installed distributions (``importlib.metadata``, nothing imported) and finds
  a CUDA build (``nvidia-*`` or ``triton`` installed, a torch whose version carries ``+cu…``/``+rocm…`` or whose
  ``torch/version.py`` names a CUDA/ROCm version), and a wheel that was compiled on this machine: pip builds a wheel
  from an sdist before installing it, and a locally built wheel with native code is tagged with the bare platform
  (``linux_x86_64``), because only the ``auditwheel`` repair that PyPI uploads go through makes it ``manylinux_*``.
  A pure-Python sdist leaves no such trace once installed (its wheel is ``py3-none-any`` like a downloaded one),
  which is why the second check exists.
- ``report_problems(report)`` reads ``pip install --dry-run --report`` JSON: every item that would be installed from
  something other than a ``.whl`` is built from source. Pure-Python sdists in ``PURE_SDISTS`` (no compiler needed,
  only setuptools) are allowed and listed; any other is a problem, as is a CUDA package in the resolution.

    .venv/bin/python scripts/check_install.py             # the installed distributions (instant, offline)
    .venv/bin/python scripts/check_install.py --resolve   # also resolve `make setup`'s install from the indexes

``TAILOR_GPU_INSTALL=1`` accepts CUDA packages, for a GPU machine that brings its own torch build on purpose.
Exit status: 0 clean, 1 problems found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib.metadata import Distribution, distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_PIN = "torch==2.13.0"  # as the Makefile pins it

# Published only as sdists, pure Python: pip builds them with setuptools, no compiler involved.
PURE_SDISTS = {
    "rouge-score": "rouge-score 0.1.2 has no wheel on PyPI; pure Python (setuptools only)",
}

_CUDA_NAME = re.compile(r"^(nvidia-.*|triton|pytorch-triton.*|cupy.*)$")
_GPU_LOCAL_VERSION = re.compile(r"\+(cu|rocm)\d", re.IGNORECASE)
_TORCH_GPU_LINE = re.compile(r"^(cuda|hip|rocm)\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def gpu_intended() -> bool:
    return os.environ.get("TAILOR_GPU_INSTALL", "").strip().lower() in {"1", "true", "yes", "on"}


def _wheel_tags(dist: Distribution) -> list[str]:
    text = dist.read_text("WHEEL") or ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def _locally_compiled(tags: Iterable[str]) -> bool:
    # A tag is python-abi-platform. "any" is pure Python; manylinux/musllinux/macosx/win wheels come from an index.
    # A bare "linux_<arch>" platform is what setuptools/pip write for a wheel built here, never a PyPI upload.
    return any(tag.rsplit("-", 1)[-1].startswith("linux_") for tag in tags)


def _torch_gpu_build(dist: Distribution) -> str | None:
    if _GPU_LOCAL_VERSION.search(dist.version):
        return f"torch {dist.version} is a GPU build"
    try:
        text = dist.locate_file("torch/version.py").read_text(encoding="utf-8")  # type: ignore[union-attr]
    except OSError:
        return None
    for key, value in _TORCH_GPU_LINE.findall(text):
        return f"torch {dist.version} is built for {key.upper()} {value} (torch/version.py)"
    return None


def installed_problems(dists: Iterable[Distribution] | None = None, *, allow_gpu: bool | None = None) -> list[str]:
    """What in the installed distributions breaks the CPU-only, wheels-only promise; empty when all is well."""
    allow_gpu = gpu_intended() if allow_gpu is None else allow_gpu
    problems: list[str] = []
    for dist in dists if dists is not None else distributions():
        name = canonical(dist.metadata["Name"] or "")
        if not name:
            continue
        if not allow_gpu and _CUDA_NAME.match(name):
            problems.append(f"{name} {dist.version} is installed: a CUDA build of torch pulled it")
        if not allow_gpu and name == "torch" and (why := _torch_gpu_build(dist)):
            problems.append(why)
        tags = _wheel_tags(dist)
        if _locally_compiled(tags):
            problems.append(f"{name} {dist.version} was compiled on this machine (wheel tag {', '.join(tags)})")
    return sorted(set(problems))


def report_problems(report: dict, *, allow_gpu: bool | None = None) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` for a ``pip install --dry-run --report`` JSON: sources that are not wheels, CUDA packages.

    ``notes`` lists the allowed pure-Python sdists, so a run says what it built.
    """
    allow_gpu = gpu_intended() if allow_gpu is None else allow_gpu
    problems: list[str] = []
    notes: list[str] = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        name, ver = canonical(meta.get("name", "?")), meta.get("version", "?")
        url = (item.get("download_info") or {}).get("url", "")
        editable = bool(((item.get("download_info") or {}).get("dir_info") or {}).get("editable"))
        if not allow_gpu and (_CUDA_NAME.match(name) or (name == "torch" and _GPU_LOCAL_VERSION.search(ver))):
            problems.append(f"{name} {ver} would be installed ({url}): a CUDA build")
        if editable or url.endswith(".whl"):
            continue  # tailorlm itself is the one project built here, as an editable install
        if name in PURE_SDISTS:
            notes.append(f"{name} {ver}: built from {url.rsplit('/', 1)[-1]}; {PURE_SDISTS[name]}")
        else:
            problems.append(f"{name} {ver} would be built from source ({url}): it may need a compiler")
    return problems, notes


def lock_problems(constraints: Path = ROOT / "constraints.txt", makefile: Path = ROOT / "Makefile") -> list[str]:
    """The lock must hold no CUDA package, and pin torch exactly as the Makefile does (no ``+cpu`` suffix, which
    only the PyTorch index serves, so a plain PyPI machine could not satisfy it)."""
    problems: list[str] = []
    pins: dict[str, str] = {}
    for number, raw in enumerate(constraints.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, ver = line.partition("==")
        if not sep:
            problems.append(f"{constraints.name}:{number}: {line!r} is not an exact pin (name==version)")
            continue
        pins[canonical(name)] = ver.strip()
        if _CUDA_NAME.match(canonical(name)):
            problems.append(f"{constraints.name}:{number}: {line} is a CUDA package")
    torch_pin = re.search(r"^TORCH\s*:?=\s*torch==(\S+)", makefile.read_text(encoding="utf-8"), re.MULTILINE)
    want = torch_pin.group(1) if torch_pin else TORCH_PIN.split("==")[1]
    if pins.get("torch") not in (None, want):
        problems.append(f"{constraints.name} pins torch=={pins['torch']}, the Makefile torch=={want}")
    if "tailorlm" in pins:
        problems.append(f"{constraints.name} pins tailorlm itself: an install of this checkout could not satisfy it")
    return problems


def resolve(constraints: Path = ROOT / "constraints.txt") -> dict:
    """``make setup``'s install, resolved but not installed (``--ignore-installed``, so the current venv does not
    hide anything). pip downloads only metadata where the index serves it (PEP 658), otherwise the files."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report"]
        cmd += [str(out), "-c", str(constraints), TORCH_PIN, "-e", f"{ROOT}[dev]"]
        subprocess.run(cmd, check=True, cwd=ROOT)
        return json.loads(out.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolve", action="store_true", help="also resolve the install with pip --dry-run --report")
    args = parser.parse_args(argv)
    problems = lock_problems()
    print(f"lock: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    found = installed_problems()
    print(f"installed: {'ok' if not found else f'{len(found)} problem(s)'}")
    problems += found
    if args.resolve:
        found, notes = report_problems(resolve())
        print(f"resolved: {'ok' if not found else f'{len(found)} problem(s)'}")
        for note in notes:
            print(f"  note: {note}")
        problems += found
    for problem in problems:
        print(f"  problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
