"""Runs: one execution, kept as a directory that says what ran, on what, and how it ended.

    runs/20250101-120000-sft-lora/
      run.json        id, name, kind, status, times, pid/host, seed, versions, git, hardware, datasets, lineage
      config.yaml     the config snapshot, readable and re-runnable
      logs/run.log    everything logged under the ``tailorlm`` logger while the run was open
      metrics.jsonl   one line per ``log_metrics`` call (training curves)
      metrics.json    final metrics (``write_metrics``), what ``runs list`` and ``runs compare`` show
      artifacts/      adapters, indexes, system.yaml
      heartbeat       touched every 30 s, so a reader on another host can tell a live run from a dead one

Use a run as a context manager: it ends "complete", "failed" (with the error) or "interrupted" (Ctrl-C). A
process killed with SIGKILL cannot write anything, so ``run.json`` keeps saying "running"; readers therefore
check the recorded pid (and its start time, against pid reuse) and report such a run as "interrupted".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psutil
from pydantic import BaseModel

from tailorlm.core.config import dump_config
from tailorlm.core.environment import capture_environment, hostname
from tailorlm.core.io import append_text, atomic_write_json, atomic_write_yaml
from tailorlm.errors import RunError

RunStatus = Literal["running", "complete", "failed", "interrupted", "corrupt"]

HEARTBEAT_S = 30.0
# A run on another host whose heartbeat is older than this is presumed dead.
HEARTBEAT_STALE_S = 4 * HEARTBEAT_S

_LOGGER = logging.getLogger("tailorlm")
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def _now() -> datetime:
    return datetime.now().astimezone()


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


class Run:
    """An open run directory. Create with ``Run.create``; close with ``with`` or ``finish``."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.logger = logging.getLogger(f"tailorlm.run.{meta['name']}")
        self._lock = threading.Lock()
        self._handler: logging.Handler | None = None
        self._saved_level: int | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- creation ---------------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        *,
        root: str | Path = "runs",
        config: BaseModel | Mapping[str, Any] | None = None,
        seed: int | None = None,
        parent: str | None = None,
        kind: str = "run",
        hardware: dict[str, Any] | None = None,
    ) -> Run:
        """Create ``root/<YYYYmmdd-HHMMSS>-<name>/``, record the environment, and start logging.

        ``parent`` is the System path or run id this run starts from (lineage). ``hardware`` lets callers that
        have torch loaded add what they know (e.g. the device actually used).
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        created = _now()
        slug = _SLUG.sub("-", name).strip("-") or "run"
        stem = f"{created:%Y%m%d-%H%M%S}-{slug}"
        # mkdir without exist_ok is the atomic claim: two runs started in the same second get -2, -3, ...
        for n in range(1, 10_000):
            run_id = stem if n == 1 else f"{stem}-{n}"
            try:
                (root / run_id).mkdir()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - ten thousand runs of one name in one second
            raise RunError(f"could not allocate a run directory for '{stem}' in {root}")
        path = root / run_id
        (path / "logs").mkdir()
        (path / "artifacts").mkdir()

        snapshot = dump_config(config) if config is not None else None
        me = psutil.Process()
        meta: dict[str, Any] = {
            "id": run_id,
            "name": name,
            "kind": kind,
            "status": "running",
            "created_at": created.isoformat(),
            "finished_at": None,
            "error": None,
            "pid": os.getpid(),
            # The pid's start time tells our pid apart from a later process that reuses the number.
            "pid_started_at": me.create_time(),
            "hostname": hostname(),
            "seed": seed,
            "parent": parent,
            "config": snapshot,
            **capture_environment(hardware),
            "datasets": [],
        }
        if snapshot is not None:
            atomic_write_yaml(path / "config.yaml", snapshot)
        run = cls(path, meta)
        run._save()
        run._open()
        return run

    @classmethod
    def reopen(cls, path: str | Path) -> Run:
        """Open an existing run directory again (``--resume``): running again, owned by this process."""
        path = Path(path)
        meta = _read_json(path / "run.json")
        if not isinstance(meta, dict) or "id" not in meta:
            raise RunError(f"{path} is not a run directory (no readable run.json)")
        meta.update(
            status="running",
            finished_at=None,
            error=None,
            pid=os.getpid(),
            pid_started_at=psutil.Process().create_time(),
            hostname=hostname(),
        )
        meta.setdefault("resumed_at", []).append(_now().isoformat())
        run = cls(path, meta)
        run._save()
        run._open()
        return run

    def _open(self) -> None:
        handler = logging.FileHandler(self.path / "logs" / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        _LOGGER.addHandler(handler)
        # INFO must reach the file even when the application left the logger at WARNING; restored on close.
        if _LOGGER.getEffectiveLevel() > logging.INFO:
            self._saved_level = _LOGGER.level
            _LOGGER.setLevel(logging.INFO)
        self._handler = handler
        self._touch_heartbeat()
        self._heartbeat = threading.Thread(target=self._beat, name=f"heartbeat-{self.id}", daemon=True)
        self._heartbeat.start()
        self.logger.info("run %s started (kind=%s, pid=%s)", self.id, self.meta["kind"], self.meta["pid"])

    def _touch_heartbeat(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / "heartbeat").write_text(f"{time.time()}\n")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._touch_heartbeat()

    # -- recording --------------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    @property
    def artifacts(self) -> Path:
        """Directory for what the run produces (adapters, indexes, system.yaml)."""
        return self.path / "artifacts"

    @property
    def status(self) -> str:
        return str(self.meta["status"])

    def _save(self) -> None:
        with self._lock:
            atomic_write_json(self.path / "run.json", self.meta)

    def record_dataset(self, name: str, path: str | Path, fingerprint: str, n_records: int) -> None:
        """Record a dataset this run read, with its content fingerprint, so results can be traced to data."""
        entry = {"name": name, "path": str(path), "fingerprint": fingerprint, "n_records": n_records}
        self.meta["datasets"].append(entry)
        self._save()

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Append one line ``{"step", "time", **metrics}`` to ``metrics.jsonl``."""
        line = json.dumps({"step": step, "time": time.time(), **metrics}, default=str)
        # One write of one line in append mode: a crash loses at most a torn last line, which readers skip, and
        # append_text ends such a line before the next record so a resumed run does not glue onto it.
        with self._lock:
            append_text(self.path / "metrics.jsonl", line + "\n")

    def write_metrics(self, metrics: Mapping[str, Any], *, merge: bool = True) -> None:
        """Write final metrics to ``metrics.json`` atomically, merged into what is there unless ``merge=False``."""
        current = _read_json(self.path / "metrics.json") if merge else None
        out = {**(current if isinstance(current, dict) else {}), **metrics}
        with self._lock:
            atomic_write_json(self.path / "metrics.json", out)

    # -- ending -----------------------------------------------------------------------------------------------

    def finish(self, status: RunStatus = "complete", error: str | None = None) -> None:
        """Mark the run ended, stop the heartbeat and detach the log file. Calling it twice is harmless."""
        if self.meta["status"] != "running":
            return
        self.meta.update(status=status, finished_at=_now().isoformat(), error=error)
        self._save()
        (self.logger.info if status == "complete" else self.logger.error)(
            "run %s %s%s", self.id, status, f": {error}" if error else ""
        )
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=1.0)
        if self._handler is not None:
            _LOGGER.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._saved_level is not None:
            _LOGGER.setLevel(self._saved_level)
            self._saved_level = None

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.finish("complete")
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("interrupted", "interrupted by the user (KeyboardInterrupt)")
        else:
            self.logger.error("run failed", exc_info=(exc_type, exc, tb))  # type: ignore[arg-type]
            self.finish("failed", f"{type(exc).__name__}: {exc}")

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"


# --- reading runs -------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _last_jsonl(path: Path, tail: int = 65536) -> dict[str, Any] | None:
    """The last complete JSON line of a possibly large, possibly torn ``metrics.jsonl``."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                return obj
    return None


def _pid_alive(pid: Any, started_at: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return False
        # Allow for rounding: a different process reusing the pid started at a clearly different time.
        return not isinstance(started_at, int | float) or abs(proc.create_time() - started_at) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _effective_status(meta: dict[str, Any], path: Path) -> tuple[str, str | None]:
    """The status a reader should believe: "running" on disk may belong to a process that died."""
    status, error = meta.get("status"), meta.get("error")
    if status != "running":
        return str(status), error
    if meta.get("hostname") == hostname():
        if _pid_alive(meta.get("pid"), meta.get("pid_started_at")):
            return "running", None
        return "interrupted", f"process {meta.get('pid')} died without finishing the run (killed?)"
    # Another machine: we cannot see its processes, so trust only a fresh heartbeat.
    try:
        age = time.time() - (path / "heartbeat").stat().st_mtime
    except OSError:
        age = float("inf")
    if age < HEARTBEAT_STALE_S:
        return "running", None
    return "interrupted", f"no heartbeat from {meta.get('hostname')} for {age:.0f}s"


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class RunInfo:
    """What a reader knows about a run directory (possibly a corrupt one)."""

    id: str
    path: Path
    status: str
    name: str | None = None
    kind: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    parent: str | None = None
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # flattened: {"eval.f1": 0.4}

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, or to now while running; None when unknown (interrupted/corrupt)."""
        if self.created_at is None:
            return None
        if self.finished_at is not None:
            return (self.finished_at - self.created_at).total_seconds()
        return (_now() - self.created_at).total_seconds() if self.status == "running" else None

    @property
    def headline_metrics(self) -> dict[str, Any]:
        """The first few numeric metrics, for one-line summaries."""
        nums = {k: v for k, v in self.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        return dict(list(nums.items())[:3])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (without the config and environment, which ``describe_run`` adds)."""
        return {
            "id": self.id,
            "path": str(self.path),
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": self.duration_s,
            "error": self.error,
            "parent": self.parent,
            "seed": self.seed,
            "metrics": self.metrics,
        }


def read_run(path: str | Path) -> RunInfo:
    """Read one run directory. Never raises for a malformed one: it comes back with status "corrupt"."""
    path = Path(path)
    meta = _read_json(path / "run.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("status"), str):
        why = "run.json is missing" if not (path / "run.json").exists() else "run.json is unreadable or malformed"
        return RunInfo(id=path.name, path=path, status="corrupt", error=why)
    status, error = _effective_status(meta, path)
    metrics = _read_json(path / "metrics.json")
    if not isinstance(metrics, dict):
        # No final metrics yet (or a crash before them): the latest logged values are the best we have.
        metrics = {k: v for k, v in (_last_jsonl(path / "metrics.jsonl") or {}).items() if k not in ("step", "time")}
    seed = meta.get("seed")
    return RunInfo(
        id=str(meta.get("id") or path.name),
        path=path,
        status=status,
        name=meta.get("name"),
        kind=meta.get("kind"),
        created_at=_parse_time(meta.get("created_at")),
        finished_at=_parse_time(meta.get("finished_at")),
        error=error,
        parent=meta.get("parent"),
        seed=seed if isinstance(seed, int) else None,
        meta=meta,
        metrics=_flatten(metrics),
    )


def _run_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    # Hidden entries are atomic-write leftovers (``.name.partial``), not runs.
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def list_runs(root: str | Path = "runs") -> list[RunInfo]:
    """Every run under ``root``, newest first; malformed directories are listed as "corrupt"."""
    infos = [read_run(p) for p in _run_dirs(Path(root))]
    # Ids start with the creation time, so they break ties between runs created in the same second.
    return sorted(infos, key=lambda r: (r.created_at.timestamp() if r.created_at else 0.0, r.id), reverse=True)


def load_run(ref: str | Path, root: str | Path = "runs") -> RunInfo:
    """Resolve ``ref`` (a run directory, its run.json, an id, an id prefix, a run name, or "latest")."""
    p = Path(ref)
    if p.name == "run.json" and p.is_file():
        p = p.parent
    if (p / "run.json").is_file() or (p.is_dir() and p.parent.resolve() == Path(root).resolve()):
        return read_run(p)
    root = Path(root)
    ref = str(ref)
    dirs = _run_dirs(root)
    if not dirs:
        raise RunError(f"no run '{ref}': {root} holds no runs", hint="pass --root, or a path to a run directory")
    if ref == "latest":
        return list_runs(root)[0]
    exact = [d for d in dirs if d.name == ref]
    matches = exact or [d for d in dirs if d.name.startswith(ref)]
    if not matches:
        # A bare name ("sft-lora") means its newest run, the way people talk about runs.
        named = [r for r in list_runs(root) if r.name == ref]
        if named:
            return named[0]
        raise RunError(f"no run matches '{ref}' in {root}", hint="see `tailor runs list` for ids")
    if len(matches) > 1:
        shown = ", ".join(sorted(d.name for d in matches)[:5])
        raise RunError(f"'{ref}' matches {len(matches)} runs in {root}: {shown}", hint="give more of the id")
    return read_run(matches[0])


def _run_of(ref: str, root: Path) -> RunInfo | None:
    """The run that a lineage reference (run id, run dir, or a system.yaml inside one) points at, if any."""
    p = Path(ref)
    for candidate in (p, *p.parents):
        if (candidate / "run.json").is_file():
            return read_run(candidate)
    with contextlib.suppress(RunError):
        return load_run(ref, root)
    return None


def lineage(info: RunInfo, root: str | Path = "runs") -> list[str]:
    """Ancestors of a run, nearest first: each parent reference, followed while it resolves to a run."""
    chain: list[str] = []
    seen = {info.id}
    current: RunInfo | None = info
    while current is not None and current.parent:
        chain.append(current.parent)
        current = _run_of(current.parent, Path(root))
        if current is None or current.id in seen:
            break
        seen.add(current.id)
    return chain


def describe_run(ref: str | Path, root: str | Path = "runs") -> dict[str, Any]:
    """Everything ``tailor runs show`` prints: meta, config, metrics, artifacts and lineage."""
    info = load_run(ref, root)
    meta = {k: v for k, v in info.meta.items() if k != "config"}
    artifacts = []
    if (info.path / "artifacts").is_dir():
        for f in sorted((info.path / "artifacts").rglob("*")):
            if f.is_file():
                artifacts.append({"path": str(f.relative_to(info.path)), "bytes": f.stat().st_size})
    children = [r.id for r in list_runs(root) if r.parent and (c := _run_of(r.parent, Path(root))) and c.id == info.id]
    return {
        **info.to_dict(),
        "meta": meta,
        "config": info.meta.get("config"),
        "last_logged": _last_jsonl(info.path / "metrics.jsonl"),
        "artifacts": artifacts,
        "lineage": {"parent": info.parent, "ancestors": lineage(info, root), "children": children},
    }


def compare_runs(refs: Sequence[str | Path], root: str | Path = "runs") -> dict[str, Any]:
    """Metrics side by side: ``{"runs": [summary...], "metrics": {name: {run_id: value or None}}}``."""
    if not refs:
        raise RunError("compare needs at least one run")
    infos = [load_run(r, root) for r in refs]
    names: list[str] = []
    for info in infos:
        names.extend(k for k in info.metrics if k not in names)
    return {
        "runs": [i.to_dict() for i in infos],
        "metrics": {m: {i.id: i.metrics.get(m) for i in infos} for m in names},
    }
