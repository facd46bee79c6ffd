"""Errors a user can act on, carrying what went wrong as fields.

The library never spells a command-line flag. A message refers to a setting with `ref("motion_bucket")`; the
edge that shows the message decides how the setting is spelled: `--motion-bucket` on the command line,
`motion_bucket=` in Python (`str(error)`). `OptionError` also carries the option, the value and what is
allowed, so a caller can act on them without parsing text. The CLI prints one line and exits with
`exit_code`; tracebacks only appear in debug mode.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_REF = re.compile(r"\{opt:([a-z_]+)\}")
# Terminal colour codes: Ray colours some of its messages, and a reason quoted in one line is plain text.
ANSI_CODE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def ref(option: str) -> str:
    """A reference to the setting `option` inside a message, spelled by whoever shows the message."""
    return "{opt:" + option + "}"


def keyword(option: str) -> str:
    """How Python callers spell a setting: as the keyword argument."""
    return option


def spell_refs(text: str, spell: Callable[[str], str] = keyword) -> str:
    """`text` with every `ref(...)` spelled by `spell` (for progress notes as well as errors)."""
    return _REF.sub(lambda m: spell(m.group(1)), text)


def first_line(exc: BaseException, default: str = "") -> str:
    """The first line of `exc`'s message, without colour codes or surrounding blanks; `default` if it has none.

    For quoting another library's error inside one line of ours (its messages can run to many lines).
    """
    text = ANSI_CODE.sub("", str(exc)).strip()
    return text.splitlines()[0].strip() if text else default


class SvdError(Exception):
    """A runtime failure (exit code 1): the command was valid but could not be carried out."""

    exit_code = 1

    def __init__(self, message: str, **fields):
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def marked(self) -> str:
        """The whole message with settings still as references (for a caller that spells them later)."""
        return self.message

    def render(self, spell: Callable[[str], str] = keyword) -> str:
        """The message with every setting spelled by `spell` (option name -> text)."""
        return spell_refs(self.marked(), spell)

    def __str__(self) -> str:
        return self.render()


class UsageError(SvdError):
    """The request itself is wrong (exit code 2): a bad value, a missing input, a bad template."""

    exit_code = 2


class OptionError(UsageError):
    """One setting has a value svd cannot use: `option`, `value`, and `allowed` (a range, choices or a form)."""

    def __init__(self, option: str, value, problem: str, allowed=None, *, shown: str | None = None):
        # `shown`: the value as the user wrote it, when that differs from the parsed value (e.g. '1,x').
        super().__init__(problem, option=option, value=value, allowed=allowed, shown=shown)

    def marked(self) -> str:
        value = self.shown if self.shown is not None else self.value
        return f"{ref(self.option)} {value}: {self.message}"

    def render(self, spell: Callable[[str], str] = keyword) -> str:
        if spell is keyword:  # Python spells it as the keyword argument it was given as
            value = self.shown if self.shown is not None else repr(self.value)
            return f"{self.option}={value}: {spell_refs(self.message, spell)}"
        return super().render(spell)


class ModelUnavailableError(SvdError):
    """The weights for a model are not on disk and cannot be downloaded right now."""


class InstallError(SvdError):
    """A package svd computes with does not import: the Python environment needs fixing, not the model."""


class ModelLoadError(SvdError):
    """The model's files are there but could not be loaded: nothing in this run can proceed."""


class InputImageError(SvdError):
    """One input image cannot be used; a batch reports it and carries on with the next one."""


class OutOfMemoryError(SvdError):
    """The device ran out of memory even on the leanest memory profile."""


class NonFiniteError(SvdError):
    """The model produced NaN or infinite values even in full precision: the video is not written."""
