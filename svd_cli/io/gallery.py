"""The batch page (`--gallery`): `index.html` beside a run's videos, to look at a night's batch instead of reading.

Every video of the run plays muted in a loop next to its input picture, with its seed, model, the settings that
differ from the model's defaults, its time and a link to its recipe; the failures are listed with their one-line
reason, and the totals head the page. The page needs nothing from the network (no fonts, scripts or styles
from elsewhere: it works from a USB stick; links are relative where they can be). It is rewritten atomically after
every result and reloads itself every RELOAD seconds while the run goes on; the last write stops that. A video
the browser cannot play says so on the page, and each video element says how far it got in `data-state`.

svd replaces only a page it wrote (its `<meta name="generator">` says so); any other index.html is left alone.
"""

from __future__ import annotations

import datetime
import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import UsageError, ref
from .safety import frame_pngs
from .video import atomic_output

PAGE = "index.html"
GENERATOR = "svd batch page"
RELOAD = 10  # seconds between reloads while the run goes on
PLAYED = (".mp4", ".webm")  # shown in a video element; a GIF is a picture; a frames folder shows its first frame


@dataclass
class PageEntry:
    """One result of the run as the page shows it."""

    status: str  # made | found (an earlier run made it) | skipped | failed
    label: str  # the input's name, or the prompt
    video: Path | None = None
    picture: Path | None = None  # the input picture
    seed: int | None = None
    model: str | None = None
    changed: dict[str, Any] = field(default_factory=dict)  # settings that differ from the model's defaults
    seconds: float | None = None  # None: an earlier run made it
    recipe: Path | None = None
    reason: str = ""


def is_own_page(path: Path) -> bool:
    """Whether `path` is a page svd wrote (so it may be replaced)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as stream:
            head = stream.read(2048)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head


class BatchPage:
    """index.html in `folder`, rewritten as each of the run's `total` results arrives."""

    def __init__(self, folder: Path, total: int):
        self.path = folder / PAGE
        if (self.path.exists() or self.path.is_symlink()) and not is_own_page(self.path):
            raise UsageError(f"{self.path} exists and svd did not write it; svd never replaces it: move it away, or "
                             f"drop {ref('gallery')}.", option="gallery", path=self.path)  # fmt: skip
        self.total = total
        self.failed = False  # a write failed: the run goes on without the page
        self.entries: list[PageEntry] = []
        self.started = time.monotonic()

    def add(self, entry: PageEntry) -> None:
        self.entries.append(entry)
        self.write(running=True)

    def close(self, interrupted: bool = False) -> None:
        self.write(running=False, interrupted=interrupted)

    def write(self, running: bool, interrupted: bool = False) -> None:
        with atomic_output(self.path) as tmp:
            tmp.write_text(self.render(running, interrupted), encoding="utf-8")

    # --- the page ------------------------------------------------------------------------------------------

    def render(self, running: bool, interrupted: bool = False) -> str:
        statuses = ("made", "found", "skipped", "failed")
        counts = {status: sum(e.status == status for e in self.entries) for status in statuses}
        elapsed = time.monotonic() - self.started
        if running:
            state = f"running: {len(self.entries)} of {self.total} done; this page reloads every {RELOAD} s"
        else:
            state = "stopped (interrupted)" if interrupted else "finished"
            state += f" at {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
        totals = (f"{counts['made']} made, {counts['found']} from earlier runs, {counts['skipped']} skipped, "
                  f"{counts['failed']} failed of {self.total}, in {elapsed:.0f} s")  # fmt: skip
        videos = [e for e in self.entries if e.video is not None and e.status in ("made", "found")]
        others = [e for e in self.entries if e not in videos]
        parts = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta name="generator" content="{GENERATOR}">',
            f'<meta http-equiv="refresh" content="{RELOAD}">' if running else "",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>svd: {html.escape(self.path.parent.name or str(self.path.parent))}</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<header><h1>{html.escape(str(self.path.parent))}</h1>",
            f'<p class="totals">{html.escape(totals)}</p><p class="state">{html.escape(state)}</p></header>',
        ]
        if others:
            parts.append('<section class="problems"><h2>Not made</h2><ul>')
            for entry in others:
                named = entry.reason if entry.label in entry.reason else f"{entry.label}: {entry.reason}"
                parts.append(f'<li class="{entry.status}"><strong>{entry.status}</strong> {html.escape(named)}</li>')
            parts.append("</ul></section>")
        parts.append('<main class="grid">')
        parts += [self._card(entry) for entry in videos]
        parts.append(f"</main><script>{SCRIPT}</script></body></html>")
        return "\n".join(part for part in parts if part) + "\n"

    def _card(self, entry: PageEntry) -> str:
        video = entry.video
        if video.suffix.lower() in PLAYED:
            shown = f'<video src="{self._href(video)}" autoplay muted loop playsinline data-state="loading"></video>'
        elif video.suffix.lower() == ".gif":
            shown = f'<img src="{self._href(video)}" alt="{html.escape(video.name)}">'
        else:  # a frames folder: its first frame
            first = next(iter(frame_pngs(video)), None) if video.is_dir() else None
            shown = f'<img src="{self._href(first)}" alt="{html.escape(video.name)}">' if first else ""
        facts = [f"seed {entry.seed}", entry.model or ""]
        facts += [f"{name.replace('_', ' ')} {value}" for name, value in entry.changed.items()]
        facts.append(f"{entry.seconds:.1f} s" if entry.seconds is not None else "made by an earlier run")
        picture = (f'<img class="input" src="{self._href(entry.picture)}" alt="input">'
                   if entry.picture is not None else "")  # fmt: skip
        recipe = f' · <a href="{self._href(entry.recipe)}">recipe</a>' if entry.recipe is not None else ""
        return (f'<figure>{shown}<figcaption>{picture}<a href="{self._href(video)}">{html.escape(video.name)}</a>'
                f"<br>{html.escape(' · '.join(f for f in facts if f))}{recipe}</figcaption></figure>")  # fmt: skip

    def _href(self, path: Path) -> str:
        """A link from the page to `path`: relative (the folder can move), else a file URI (another drive)."""
        try:
            return html.escape(quote(Path(os.path.relpath(path.resolve(), self.path.parent.resolve())).as_posix()))
        except ValueError:
            return html.escape(path.resolve().as_uri())


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f4f2; color: #222; }
header { padding: 16px 24px; background: #20242a; color: #eee; }
header h1 { font-size: 18px; margin: 0 0 4px; word-break: break-all; }
header p { margin: 2px 0; }
.problems { margin: 16px 24px; padding: 8px 16px; background: #fff0ee; border-left: 4px solid #c0392b; }
.problems h2 { font-size: 15px; margin: 4px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 16px; padding: 16px 24px; }
figure { margin: 0; background: #fff; border-radius: 6px; overflow: hidden; box-shadow: 0 1px 3px #0002; }
figure video, figure > img { width: 100%; display: block; background: #000; }
figcaption { padding: 8px 10px; overflow-wrap: anywhere; }
figcaption img.input { float: left; width: 56px; height: 56px; object-fit: cover; margin: 0 8px 4px 0; }
.warn { color: #c0392b; margin: 6px 10px; }
"""

SCRIPT = """
for (const video of document.querySelectorAll('video')) {
  const ready = () => { if (video.readyState >= 2) video.dataset.state = 'playing'; };
  video.addEventListener('loadeddata', ready);
  video.addEventListener('error', () => {
    video.dataset.state = 'cannot-play';
    const warning = 'This browser cannot play this file: open it with a player.';
    video.insertAdjacentHTML('afterend', '<p class="warn">' + warning + '</p>');
  });
  ready();
}
"""
