"""Errors the command line reports as one line and exit status 2 (bad input, not a bug)."""

from __future__ import annotations

__all__ = ["UsageError", "ConfigError", "CheckpointError"]


class UsageError(ValueError):
    """Bad input from the user: reported as a single line, exit status 2, no traceback."""


class ConfigError(UsageError):
    """An unknown option, a value of the wrong type, or a value out of range."""


class CheckpointError(UsageError):
    """A checkpoint or saved model that is missing, unreadable, corrupt, tampered with or from
    another run, or whose state does not fit the run's config."""
