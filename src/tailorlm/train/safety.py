"""What a training run does when the machine runs out of disk or memory: stop cleanly, say what to do next.

    with guard_resources(run.path, recipe.training):
        trainer.train(...)

A full disk (``ENOSPC``, or ``EDQUOT`` over a quota) while writing a checkpoint or the final artifacts, and an
out-of-memory error in a training step (``torch.OutOfMemoryError`` on a GPU, ``MemoryError`` or a "out of memory"
``RuntimeError`` on a CPU) become a ``ResourceError``: a ``TailorError``, so the CLI prints it without a traceback
and exits non-zero, and the ``Run`` context ends the run "failed" (never "complete"). The message names the run
directory, the last complete checkpoint and the resume command; for OOM, which knobs to lower.

A checkpoint cut short by the full disk has no (or a torn) ``trainer_state.json``; resume skips it
(``complete_checkpoint``), and the guard deletes it to give the space back.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tailorlm.core.io import atomic_directory
from tailorlm.core.limits import causes
from tailorlm.errors import ResourceError

log = logging.getLogger("tailorlm.train.safety")

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_disk_full(err: BaseException) -> bool:
    """True for "no space left on device" and "disk quota exceeded", however deep they were wrapped."""
    return any(isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS for e in causes(err))


def is_out_of_memory(err: BaseException) -> bool:
    """True for an allocator failure on any device: CUDA/XPU/MPS OOM, Python's MemoryError, CPU "out of memory"."""
    import torch

    for e in causes(err):
        if isinstance(e, torch.OutOfMemoryError | MemoryError):
            return True
        # CPU allocators and older CUDA paths raise a plain RuntimeError ("DefaultCPUAllocator: can't allocate
        # memory", "CUDA out of memory"); the text is the only signal.
        if isinstance(e, RuntimeError) and re.search(r"out of memory|can't allocate memory", str(e), re.I):
            return True
    return False


def complete_checkpoint(folder: Path) -> bool:
    """A checkpoint is complete when its ``trainer_state.json`` (the Trainer writes it last) parses."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Every ``checkpoint-N`` folder under ``folder``, by step."""
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir())


def _last_complete(folder: Path) -> Path | None:
    done = [p for _, p in checkpoints(folder) if complete_checkpoint(p)]
    return done[-1] if done else None


def _remove_incomplete(folder: Path) -> list[str]:
    removed = []
    for _, p in checkpoints(folder):
        if not complete_checkpoint(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def resource_message(err: BaseException, run_dir: Path, training: Any, where: str) -> ResourceError:
    """The ``ResourceError`` for ``err``: what happened, the run, the last good checkpoint, what to do."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    resume = f"tailor train sft --resume {run_dir}"
    if is_disk_full(err):
        removed = _remove_incomplete(ckpt_dir)
        last = _last_complete(ckpt_dir)
        parts = [
            f"the disk is full ({err}) while {where}.",
            f"Run directory: {run_dir}.",
            f"Last complete checkpoint: {last.name if last else 'none (a resume starts from step 0)'}.",
        ]
        if removed:
            parts.append(f"Removed the incomplete {', '.join(removed)} to give its space back.")
        hint = (
            f"free some space (or lower training.save_total_limit), then resume: {resume}"
            if last
            else f"free some space, then resume: {resume}"
        )
        return ResourceError(" ".join(parts), hint=hint)
    last = _last_complete(ckpt_dir)
    # getattr: every TRL-trained technique (sft, pretrain) passes its own Training model here.
    batch, accum = int(getattr(training, "batch_size", 1)), int(getattr(training, "grad_accum", 1))
    max_length = int(getattr(training, "max_length", 1024))
    if batch > 1:
        # Halving the micro-batch and doubling accumulation keeps the effective batch (and so the LR schedule).
        lower = f"training.batch_size={batch // 2} training.grad_accum={accum * (batch // (batch // 2))}"
    else:
        lower = "training.batch_size=1"
    checkpointing = "training.activation_checkpointing=true"
    parts = [
        f"out of memory while {where} ({type(err).__name__}: {str(err)[:200]}).",
        f"Run directory: {run_dir}.",
        f"Last complete checkpoint: {last.name if last else 'none (a resume starts from step 0)'}.",
    ]
    hint = (
        f"lower the memory per step, then resume: {resume} {lower} — the effective batch stays "
        f"{batch * accum}; also consider training.max_length={max(8, max_length // 2)} "
        f"(now {max_length}) or {checkpointing} (recompute activations instead of keeping them)"
    )
    return ResourceError(" ".join(parts), hint=hint)


@contextlib.contextmanager
def guard_resources(run_dir: str | Path, training: Any, where: str = "training") -> Iterator[None]:
    """Turn a full disk or an OOM inside the block into a ``ResourceError`` with the way out."""
    try:
        yield
    except Exception as err:
        if not (is_disk_full(err) or is_out_of_memory(err)):
            raise
        error = resource_message(err, Path(run_dir), training, where)
        log.error("%s", error)
        raise error from err


@contextlib.contextmanager
def final_directory(path: Path, main: bool) -> Iterator[Path]:
    """Where a process writes the final artifacts: on the main process, a temporary folder renamed to ``path``
    only when complete (a killed save never leaves a complete-looking folder); on the others, a scratch folder
    that is thrown away (under DDP/FSDP/DeepSpeed every rank takes part in the save, only rank 0 writes)."""
    if main:
        with atomic_directory(path) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix="tailor-rank-") as scratch:
            yield Path(scratch)
