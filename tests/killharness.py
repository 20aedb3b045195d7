"""Crash-consistency harness: run a `tailor` command as a real process, SIGKILL it at a chosen point, check that
nothing on disk looks complete but isn't, run it again and check it finishes (resuming where it can).

    point = KillPoint.when_file("checkpoint-2", run_glob(runs, "checkpoints/checkpoint-2/trainer_state.json"))
    killed = spawn_and_kill(argv, env, point)
    problems = scan(out_dir)           # torn JSON/YAML/safetensors, "complete" runs without their artifacts, ...
    ...rerun, assert...
    record("train sft", point.label, killed, state="checkpoint-2", rerun="resumed from checkpoint-2", ok=True)

Kill points are either deterministic (a file appears: a checkpoint, a rung's result, the first cached prediction)
or a seeded random delay within the command's measured run time. Every outcome lands in ``LEDGER``;
``summary()`` prints the table of kill points and outcomes (tests/conftest.py shows it at the end of the session).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The CLI as a real process: `python -m tailorlm.cli.main` is the `tailor` script without the install step.
TAILOR = [sys.executable, "-m", "tailorlm.cli.main"]


@dataclass(frozen=True)
class KillPoint:
    """When to SIGKILL: once ``ready()`` is true (polled every 50 ms), then after ``delay_s`` more."""

    label: str
    ready: Callable[[], bool] = lambda: True
    delay_s: float = 0.0

    @classmethod
    def after(cls, seconds: float) -> KillPoint:
        return cls(f"after {seconds:.1f}s", delay_s=seconds)

    @classmethod
    def when_file(cls, label: str, found: Callable[[], bool], delay_s: float = 0.0) -> KillPoint:
        return cls(label, ready=found, delay_s=delay_s)


def random_points(seed: int, run_s: float, n: int, lo: float = 0.05, hi: float = 0.7) -> list[KillPoint]:
    """``n`` seeded delays spread over ``[lo, hi]`` of a command's measured run time ``run_s``.

    Not up to 1: the measured (first, colder) run is often the slowest, and a point past the end kills nothing."""
    rng = random.Random(seed)
    return [KillPoint.after(rng.uniform(lo, hi) * run_s) for _ in range(n)]


def first_match(root: Path, pattern: str) -> Callable[[], bool]:
    """A ``ready`` test: some path under ``root`` matches the glob ``pattern``."""
    return lambda: root.exists() and next(root.glob(pattern), None) is not None


@dataclass
class Killed:
    """What happened to the process: killed at ``at_s`` seconds, or it ended first with ``returncode``."""

    killed: bool
    at_s: float
    returncode: int | None
    stderr: str = ""


def spawn_and_kill(argv: list[str], env: dict[str, str], point: KillPoint, timeout_s: float = 600) -> Killed:
    """Start ``argv`` in its own process group and SIGKILL the whole group at ``point``.

    The group, because a command may have helpers (tokenizer threads are fine; a launcher's workers are not). If the
    command ends before the point is reached, nothing is killed and ``killed`` is False.
    """
    start = time.monotonic()
    err_path = Path(env.get("TMPDIR", "/tmp")) / f"killharness-{os.getpid()}-{time.time_ns()}.err"
    with open(err_path, "w+b") as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            while proc.poll() is None and not point.ready():
                if time.monotonic() - start > timeout_s:
                    raise TimeoutError(f"kill point {point.label!r} not reached in {timeout_s}s: {argv}")
                time.sleep(0.05)
            deadline = time.monotonic() + point.delay_s
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            killed = proc.poll() is None
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")[-4000:]
    err_path.unlink(missing_ok=True)
    # A command that ended on its own before the point must have succeeded: a setup error is not a kill outcome.
    assert killed or proc.returncode == 0, f"{argv} ended before {point.label!r} with {proc.returncode}: {stderr}"
    return Killed(killed, time.monotonic() - start, None if killed else proc.returncode, stderr)


def run(argv: list[str], env: dict[str, str], timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)


# --- what "looks complete but isn't" means, file by file ----------------------------------------------------------


def _hidden(path: Path, root: Path) -> bool:
    """Atomic-write leftovers (``.name.XXXX.tmp``, ``.name.XXXX.partial``, ``.name.lock``) and anything in them."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _check_file(path: Path) -> str | None:
    text_kinds = {".json", ".jsonl", ".yaml", ".yml"}
    try:
        if path.suffix in text_kinds:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                json.loads(text)
            elif path.suffix in (".yaml", ".yml"):
                yaml.safe_load(text)
            else:
                lines = text.split("\n")
                # A torn *last* line is the documented cost of a kill (readers skip it); a torn line in the middle
                # would mean a later writer glued its record onto a fragment.
                body = lines[:-1] if text.endswith("\n") else lines[:-2]
                for i, line in enumerate(body, 1):
                    if line.strip() and not _parses(line) and not _is_torn_fragment(line):
                        return f"{path}: line {i} is not JSON"
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    f.get_tensor(key)
    except Exception as err:
        return f"{path}: {type(err).__name__}: {str(err)[:160]}"
    return None


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _is_torn_fragment(line: str) -> bool:
    """A fragment left by a killed writer and ended by the next one (core/io.append_text): tolerated, every reader
    skips it. Not tolerated: a whole record glued onto the fragment (its tail parses), which readers would lose."""
    return not any(c == "{" and i > 0 and _parses(line[i:]) for i, c in enumerate(line))


@dataclass
class Scan:
    problems: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # run dir -> status as readers report it


def scan(*roots: Path) -> Scan:
    """Everything under ``roots`` that looks complete must be whole.

    - every visible JSON / YAML file parses, every JSONL line but a torn last one parses, every safetensors opens;
    - a run whose ``run.json`` says ``complete`` has its ``metrics.json``, and its ``artifacts/system.yaml`` (when it
      has one) loads as a System whose local weights exist;
    - a training checkpoint with ``trainer_state.json`` (written last) has weights that open;
    - a ladder rung's ``result.json`` (written last) names a System that loads;
    - a converted model or exported embedder in a cache has its completion marker only beside whole files.
    Hidden atomic-write leftovers are listed, not judged: nothing reads them.
    """
    from tailorlm.core.run import read_run
    from tailorlm.core.system import System

    out = Scan()
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            if _hidden(path, root):
                if path.name.startswith(".") and not path.name.endswith(".lock"):
                    out.leftovers.append(str(path))
                continue
            if path.is_file() and (problem := _check_file(path)):
                out.problems.append(problem)
            if path.name == "run.json":
                info = read_run(path.parent)
                out.runs[str(path.parent)] = info.status
                if info.status == "complete":
                    out.problems += _complete_run(path.parent)
            if path.name == "system.yaml" or (path.name == "result.json" and path.parent.parent.name == "rungs"):
                folder = path.parent if path.name == "system.yaml" else path.parent / "system"
                try:
                    system = System.load(folder)
                    for spec in [system.model, *(a.path for a in system.adapters)]:
                        if spec.startswith("/") and not Path(spec).exists():
                            out.problems.append(f"{path}: points at missing {spec}")
                except Exception as err:
                    out.problems.append(f"{path}: System does not load: {type(err).__name__}: {str(err)[:160]}")
    return out


def _complete_run(run_dir: Path) -> list[str]:
    problems = []
    kind = json.loads((run_dir / "run.json").read_text()).get("kind")
    # Kinds whose results are metrics.json (a ladder's plan calibration run, for one, writes none).
    if kind in ("sft", "pretrain", "classify", "eval") and not (run_dir / "metrics.json").is_file():
        problems.append(f"{run_dir}: complete {kind} run without metrics.json")
    if kind in ("sft", "pretrain", "classify") and not (run_dir / "artifacts" / "system.yaml").is_file():
        problems.append(f"{run_dir}: complete {kind} run without artifacts/system.yaml")
    if kind == "eval" and not (run_dir / "predictions.jsonl").is_file():
        problems.append(f"{run_dir}: complete eval run without predictions.jsonl")
    return problems


def jsonl_records(path: Path) -> list[dict]:
    """The whole records of a JSONL file (torn lines skipped, as every reader does)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip() and _parses(line)]


# --- the ledger ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    command: str
    point: str
    killed: bool
    at_s: float
    state: str  # what the kill left, as a reader sees it
    rerun: str  # what the next run did
    ok: bool


LEDGER: list[Outcome] = []


def record(command: str, point: KillPoint | str, killed: Killed, state: str, rerun: str, ok: bool) -> Outcome:
    label = point if isinstance(point, str) else point.label
    outcome = Outcome(command, label, killed.killed, killed.at_s, state, rerun, ok)
    LEDGER.append(outcome)
    if path := os.environ.get("TAILOR_KILL_REPORT"):  # one JSON line per kill, for docs/robustness.md
        with open(path, "a") as f:
            f.write(json.dumps(outcome.__dict__) + "\n")
    return outcome


def summary(outcomes: Iterable[Outcome] | None = None) -> str:
    """The table of kill points and outcomes, then the totals per command."""
    rows = list(LEDGER if outcomes is None else outcomes)
    if not rows:
        return ""
    lines = [f"{'command':<15} {'kill point':<40} {'at':>6}  {'left behind':<38} {'next run':<40} ok"]
    for o in rows:
        at = f"{o.at_s:5.1f}s" if o.killed else "ended"
        lines.append(f"{o.command:<15} {o.point[:40]:<40} {at:>6}  {o.state[:38]:<38} {o.rerun[:40]:<40} {o.ok}")
    lines.append("")
    by_command: dict[str, list[Outcome]] = {}
    for o in rows:
        by_command.setdefault(o.command, []).append(o)
    for command, items in by_command.items():
        killed = sum(o.killed for o in items)
        ok = sum(o.ok for o in items)
        lines.append(f"{command}: {len(items)} kill points, {killed} killed mid-run, {ok} recovered cleanly")
    return "\n".join(lines)
