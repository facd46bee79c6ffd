"""The click that typer runs on: vendored inside typer since 0.22-ish, the `click` package before.

Only the CLI uses it (exceptions, parameter sources, default maps), so one import site keeps the two
worlds apart.
"""

from __future__ import annotations

try:  # typer with vendored click
    from typer._click import core, exceptions
except ImportError:  # pragma: no cover - older typer on the click package
    import click.core as core
    import click.exceptions as exceptions

ParameterSource = core.ParameterSource
UsageError = exceptions.UsageError
BadParameter = exceptions.BadParameter
ClickException = exceptions.ClickException

__all__ = ["BadParameter", "ClickException", "is_option", "ParameterSource", "UsageError", "core", "exceptions"]


def is_option(param) -> bool:
    """An --option (not a positional argument) of a command."""
    return getattr(param, "param_type_name", "") == "option"
