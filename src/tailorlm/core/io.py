"""Atomic file and directory writes.

A killed process or a full disk must never leave a file that looks complete. We write to a temporary
sibling, fsync, and ``os.replace`` it into place: readers see either the old content or the new, never half.

A full disk (``ENOSPC``) or an exhausted quota (``EDQUOT``) becomes a ``DiskFullError`` that names the file, the
free space and the mount; the temporary file is deleted and the previous complete file is left as it was.

Files and folders land with the permissions the user's umask allows (``0666``/``0777`` minus umask), not the
owner-only ``0600``/``0700`` of ``mkstemp``/``mkdtemp``: a cache shared by a group must be readable by the group.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tailorlm.errors import DiskFullError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def current_umask() -> int:
    """The process umask, read from ``/proc`` (setting it to read it back would race with other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc (macOS): the racy way, once
    os.umask(mask)
    return mask


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full_error(err: OSError, path: str | os.PathLike[str] | None) -> DiskFullError:
    """The ``DiskFullError`` for a failed write of ``path``: how much is free, on which mount, what to do.

    ``path`` is None when a native library reported the full disk without saying where (its text is kept)."""
    what = "disk quota exceeded" if err.errno == errno.EDQUOT else "disk full"
    hint = "free some space, or set TAILOR_CACHE / --out / --runs-root to a folder on another disk, and run again"
    if path is None:
        return DiskFullError(f"{what}: {err.strerror or err}", hint=hint)
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    try:
        free = f"{shutil.disk_usage(existing).free / 2**20:.0f} MB free on {_mount_point(existing)}"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        f"{what} while writing {path}: {free}; the previous version of the file, if any, is unchanged", hint=hint
    )


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (same-directory temp file + fsync + rename)."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(err, path) from err
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def append_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> None:
    """Append whole lines (``text`` ends with a newline) to a JSON Lines file.

    A writer killed mid-line leaves a torn last line without its newline. Appending straight after it would glue
    our first record onto the fragment and turn it into a corrupt line in the middle of the file; so a torn tail
    is ended first, and stays one unparseable line that readers skip.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    text = "\n" + text
            f.write(text.encode("utf-8"))  # "a" mode: the write goes to the end whatever the read position
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(err, path) from err
        raise


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an flock on ``.NAME.lock`` beside ``path``: serializes processes that would build the same folder.

    The lock file is created group-writable (umask permitting) so that another user sharing the cache can take
    the same lock; when they cannot open it for writing, a read-only descriptor locks just as well (flock).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that is renamed to ``path`` only if the block finishes.

    On any exception (including KeyboardInterrupt) the temporary directory is removed and ``path`` is
    untouched, so a half-written model folder can never be mistaken for a complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        # Rename the old folder away before deleting it: a process killed while deleting in place would leave a
        # half-deleted folder under the real name, whose surviving marker files still say "complete". Retried,
        # because a second writer of the same path (without exclusive_lock) may put its folder there in between:
        # the last one wins, both finish, and the path always holds one whole folder or none.
        olds: list[Path] = []
        for _ in range(16):
            try:
                os.replace(tmp, path)  # succeeds when nothing (or an empty folder) is there
                break
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise
            old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, old)
                olds.append(old)
        else:
            raise FileExistsError(errno.EEXIST, "could not put the new folder in place", str(path))
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(err, path) from err
        raise


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
