"""Generation as a short list of stages, with a clip passed between them.

    first frame  ->  animate (and extend)  ->  post stages (post.py: loop, upscale, interpolate, watermark)  ->  write

- first_frame.py: the still the video starts from (an image file, an in-memory picture, a prompt, a restyle).
- animate.py: the model turns the still into frames (`VideoModel`); extend.py chains more clips after it.
- loop.py, upscale.py, interpolate.py, watermark.py: one post stage each, with its `PostStage`.
- write: io/video.py writes the clip and its recipe.

Every stage appends what it did and with which settings to `Clip.stages`, so the recipe records the
ordered chain and a recipe replay can repeat it. Conditioning fps (what the model was told) and output fps (the
video's frame rate) are separate: a stage that adds frames changes the second, not the first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ..options import Request
    from ..progress import Progress


@dataclass
class Clip:
    """Frames on their way to a file: (F, H, W, 3) uint8, their frame rate, and how they were made."""

    frames: np.ndarray
    fps: int  # the output video's frame rate
    stages: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # worth telling the user, e.g. frames of one colour
    latents: Any = None  # the animate stage's final latents (keep_latents), a tensor on the CPU

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])


@dataclass
class StageContext:
    """What a post stage may use besides the clip."""

    request: Request
    progress: Progress
    profile: str  # the video's memory profile (tiles are sized for it)
    model: Any = None  # the stage's network, on the model's device while the stage runs (needs_model stages)


def _never(request: Request) -> bool:
    return False


def _same_frames(frames: int, request: Request) -> int:
    return frames


@dataclass(frozen=True)
class PostStage:
    """One step after animating, as the session runs it: `run(clip, context)` returns the new clip with the
    stage's record appended to `clip.stages`."""

    name: str
    wanted: Callable[[Request], bool]  # does this request ask for the stage?
    run: Callable[[Clip, StageContext], Clip]
    frames_after: Callable[[int, Request], int] = _same_frames  # frames out for frames in (svd plan's count)
    # A stage that can use a weights file: its kind in weights.toml (the setting of that name names the file),
    # whether this request needs one, and how to read it onto the CPU (placed on the device while it runs).
    model_kind: str | None = None
    needs_model: Callable[[Request], bool] = _never
    read_model: Callable[[Any, Request], Any] | None = None
