"""What making one video gives back: the one result `--json`, the ✓ line, the summary, Ray and the library read.

A batch keeps no frames in its results (they are on disk); the library's `animate_image` returns them. A video
that an earlier run finished is described from its recipe (`Animation.from_recipe`), so a skipped output reports
the same fields as a made one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import UsageError
from .io.video import write_frames
from .options import FORMATS

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .io.credentials import SigningKey
    from .stages import Clip


@dataclass
class Animation:
    """One animated video: how it was made, and its frames while they are in memory."""

    seed: int  # the seed used (drawn at random when none was given)
    model: str  # the animating model's name
    fps: int  # the video's frame rate: N x the model's after interpolate=N
    frame_count: int
    width: int
    height: int
    settings: dict[str, Any]  # the animate stage's generation settings (steps, cfg, motion bucket, ...)
    stages: list[dict[str, Any]] = field(default_factory=list)  # each stage's record, in order, as the recipe has
    warnings: list[str] = field(default_factory=list)  # e.g. frames that are all one colour
    memory_profile: str | None = None  # the memory profile it was made with (None: not known)
    path: Path | None = None  # where it was written (None: in memory only)
    frames: np.ndarray | None = None  # (F, H, W, 3) uint8; None once a batch has written them
    first_frame: Image.Image | None = None  # the picture the video starts from (fitted, or drawn from a prompt)
    latents: Any = None  # with keep_latents: the final denoised latents (a CPU tensor) the frames were decoded from
    signing: SigningKey | None = None  # who signs the content credentials `write` puts in (None: write none)

    @classmethod
    def of(cls, clip: Clip, seed: int, model: str, settings: dict, memory_profile: str | None, first_frame=None,
           latents=None):  # fmt: skip
        """The result for a finished `clip` (after the post stages), with the animate stage's kept `latents`."""
        return cls(seed=seed, model=model, fps=clip.fps, frame_count=len(clip.frames), width=clip.width,
                   height=clip.height, settings=settings, stages=list(clip.stages), warnings=list(clip.warnings),
                   memory_profile=memory_profile, frames=clip.frames, first_frame=first_frame,
                   latents=latents)  # fmt: skip

    @classmethod
    def from_recipe(cls, recipe: dict) -> Animation:
        """The result an earlier run recorded in its sidecar (no frames)."""
        out, settings = recipe["output"], recipe["settings"]
        runtime = recipe.get("runtime") or {}
        return cls(seed=settings["seed"], model=recipe["model"]["name"], fps=out["fps"], frame_count=out["frames"],
                   width=out["width"], height=out["height"], settings=settings, stages=recipe.get("stages", []),
                   memory_profile=runtime.get("memory", {}).get("profile"), path=Path(out["path"]))  # fmt: skip

    @property
    def duration(self) -> float:
        """Seconds the video plays."""
        return self.frame_count / self.fps

    @property
    def segments(self) -> tuple[int, int]:
        """(clips made by the animate stage, how many of them an earlier run had finished): (1, 0) unless extended."""
        animated = [s for s in self.stages if s.get("stage") == "animate"]
        return len(animated), sum(bool(s.get("reused")) for s in animated)

    def write(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the frames at their frame rate, atomically; `fmt` (mp4, gif, webm, frames) from the suffix if
        not given (no suffix: a folder of PNG frames). An MP4 or GIF carries content credentials unless the call
        that made it turned them off (its record stands in for the recipe a batch writes beside its videos)."""
        if self.frames is None:
            raise UsageError("This result keeps no frames (a batch writes them to its file); read that file instead.")
        path = Path(path)
        fmt = fmt or (path.suffix.lower().lstrip(".") or "frames")
        if fmt not in FORMATS:
            raise UsageError(f"{path}: cannot tell the format from the suffix; pass fmt= ({', '.join(FORMATS)}).")
        output = {"path": str(path), "format": fmt, "frames": self.frame_count, "fps": self.fps,
                  "width": self.width, "height": self.height}  # fmt: skip
        record = {"svd_version": __version__, "model": {"name": self.model}, "settings": self.settings,
                  "stages": self.stages, "output": output}  # fmt: skip
        return write_frames(self.frames, path, fps=self.fps, fmt=fmt, signing=self.signing, record=record)
