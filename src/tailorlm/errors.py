"""User-facing errors.

Every error a user can cause (bad file, unknown config key, missing model) is a ``TailorError``. The CLI
prints its message without a traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TailorError(Exception):
    """An error caused by input the user can fix. ``hint`` says how."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(TailorError):
    """A config file or override is malformed, has an unknown key, or a value of the wrong type."""


class ModelNotFoundError(TailorError):
    """A model spec points at nothing loadable."""


class DataError(TailorError):
    """A dataset file is unreadable or fails validation. ``issues`` lists every problem found."""

    def __init__(self, message: str, *, issues: list | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.issues = list(issues or [])


class RunError(TailorError):
    """A run directory is missing, incomplete or malformed."""


class ResourceError(TailorError):
    """The machine ran out of something the user controls (disk, memory, a writable folder). Nothing complete was
    lost; the message says what ran out and how to go on."""

    exit_code = 3


class DiskFullError(ResourceError):
    """A write failed because the disk is full (``ENOSPC``) or a quota is exhausted (``EDQUOT``)."""
