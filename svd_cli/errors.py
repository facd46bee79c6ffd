"""Errors a user can act on.

Every failure that reaches the user is one of these: a sentence naming the file or option at fault and
the fix. The CLI prints `str(error)` and exits with `exit_code`; tracebacks only appear with `--debug`.
"""

from __future__ import annotations


class SvdError(Exception):
    """A runtime failure (exit code 1): the command was valid but could not be carried out."""

    exit_code = 1


class UsageError(SvdError):
    """The command itself is wrong (exit code 2): a bad option value, a missing input, a bad template."""

    exit_code = 2


class ModelUnavailableError(SvdError):
    """The weights for a model are not on disk and cannot be downloaded right now."""


class ModelLoadError(SvdError):
    """The model's files are there but could not be loaded: nothing in this run can proceed."""


class InputImageError(SvdError):
    """One input image cannot be used; a batch reports it and carries on with the next one."""


class OutOfMemoryError(SvdError):
    """The device ran out of memory even on the leanest memory profile."""
