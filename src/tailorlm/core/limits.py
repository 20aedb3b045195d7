"""What any command says when the machine runs out of something: disk, memory, or a folder it may write.

``resource_error(err)`` turns such a failure, however deep it was wrapped, into a ``ResourceError`` (a
``TailorError``) whose one-line message names what ran out and where, and whose hint says what to do; the CLI's root
group (``cli/_common.TailorGroup``) prints it instead of a traceback and exits non-zero. Anything else returns
``None``: a bug keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from tailorlm.core.io import DISK_FULL_ERRNOS, disk_full_error
from tailorlm.errors import ResourceError

# A folder (or a file in one) that cannot be written: read-only mount, permissions, a file where a folder should be.
UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST})
_DISK_FULL_TEXT = re.compile(r"no space left on device|disk quota exceeded|database or disk is full", re.I)
_OOM_TEXT = re.compile(r"out of memory|can't allocate memory|cannot allocate memory", re.I)

OOM_HINT = (
    "use less memory per step: a lower training.memory_limit_gb (the micro-batch and checkpointing are planned "
    "under it), a smaller batch (training.batch_size, --batch-size or ladder.batch_size; raise training.grad_accum "
    "to keep the effective batch), a shorter training.max_length, or training.activation_checkpointing=true "
    "(recompute activations instead of keeping them)"
)


def causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def is_out_of_memory(err: BaseException) -> bool:
    """An allocator failure on any device. By class name, so that describing an error never imports torch."""
    for e in causes(err):
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
            return True
        # The CPU allocator raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory"): only the
        # text tells it apart.
        if isinstance(e, RuntimeError) and _OOM_TEXT.search(str(e)):
            return True
    return False


def _cache_root() -> Path:
    from tailorlm.models.default import cache_root

    return cache_root()


def _unwritable(err: OSError) -> ResourceError:
    path = Path(str(err.filename)) if err.filename else None
    where = str(path) if path else "a file"
    reason = err.strerror or os.strerror(err.errno or 0)
    if err.errno == errno.ENOTDIR or (err.errno == errno.EEXIST and path is not None and not path.is_dir()):
        reason = "a part of that path is a file, not a folder"
    cache = _cache_root()
    in_cache = path is not None and (path == cache or cache in path.parents or path in cache.parents)
    if in_cache:
        source = "TAILOR_CACHE" if os.environ.get("TAILOR_CACHE") else "the default cache folder"
        return ResourceError(
            f"cannot write the tailorlm cache at {cache} ({source}): {where}: {reason}",
            hint="set TAILOR_CACHE to a folder you can write (each user may have their own), or fix its permissions",
        )
    return ResourceError(
        f"cannot write {where}: {reason}",
        hint="choose a writable folder (--out, --runs-root, --root), or fix its permissions",
    )


def resource_error(err: BaseException) -> ResourceError | None:
    """The clear ``ResourceError`` for a full disk, an out-of-memory or an unwritable folder; ``None`` otherwise."""
    if isinstance(err, ResourceError):
        return err
    for e in causes(err):
        if isinstance(e, ResourceError):
            return e
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return disk_full_error(e, e.filename)
        # Native writers (LanceDB's Rust, sqlite) report a full disk as text inside their own exception types.
        if not isinstance(e, OSError) and _DISK_FULL_TEXT.search(str(e)):
            quota = "quota" in str(e).lower()
            return disk_full_error(OSError(errno.EDQUOT if quota else errno.ENOSPC, str(e)), None)
    if is_out_of_memory(err):
        detail = next((f"{type(e).__name__}: {str(e)[:200]}" for e in causes(err) if str(e)), type(err).__name__)
        return ResourceError(f"out of memory ({detail}); nothing was marked complete", hint=OOM_HINT)
    for e in causes(err):
        # Only errors that name a path: a permission error without one is not something the user can act on here.
        if isinstance(e, OSError) and e.errno in UNWRITABLE_ERRNOS and e.filename:
            return _unwritable(e)
    return None
