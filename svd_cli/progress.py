"""How the library core reports progress without knowing about terminals.

The core calls these methods; the CLI passes an implementation that draws rich bars on a terminal or
prints plain lines otherwise. Scripts that `import svd_cli` get `NullProgress` (silence) by default.
"""

from __future__ import annotations


class Progress:
    """Receives stage starts, step advances and notes. Subclass and override what you need."""

    interactive = False

    def note(self, message: str) -> None:
        """A line of information (the chosen memory profile, a fallback, a warning)."""

    def start(self, stage: str, total: int | None = None) -> None:
        """A stage begins: load, encode, denoise, decode, write; `total` counts its steps if known."""

    def advance(self, amount: int = 1) -> None:
        """One more step of the current stage is done."""

    def end(self) -> None:
        """The current stage is finished."""


class NullProgress(Progress):
    """Reports nothing."""
