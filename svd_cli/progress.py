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

    def abandon(self) -> None:
        """The current stage failed: it is over, but nothing (such as its time) is reported of it."""
        self.end()

    def overall(self, done: int, total: int, seconds: float) -> None:
        """A batch spread over workers: `done` of `total` videos finished after `seconds`."""


def batch_rate(done: int, total: int, seconds: float) -> str:
    """'5/12 videos, 3.1 per minute, about 2 min left' for a batch in progress."""
    text = f"{done}/{total} videos"
    if done and seconds > 0:
        per_minute = done / seconds * 60
        left = (total - done) / per_minute
        eta = f"{left * 60:.0f} s" if left < 1 else f"{left:.0f} min" if left < 120 else f"{left / 60:.1f} h"
        text += f", {per_minute:.1f} per minute" + (f", about {eta} left" if done < total else "")
    return text


def size_text(n_bytes: float) -> str:
    """A file size in the unit that fits it: '512 KB', '21.5 MB', '268 MB', '4.5 GB' (decimal units, as the Hub
    shows them)."""
    if n_bytes >= 1e9:
        return f"{n_bytes / 1e9:.1f} GB"
    if n_bytes >= 1e6:
        return f"{n_bytes / 1e6:.0f} MB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"
    return f"{n_bytes / 1e3:.0f} KB" if n_bytes >= 1e3 else f"{n_bytes:.0f} bytes"


class NullProgress(Progress):
    """Reports nothing."""
