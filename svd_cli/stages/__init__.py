"""Generation as a short list of stages, with a clip passed between them.

    first frame  ->  animate  ->  (extend)  ->  (post: interpolate, upscale, watermark)  ->  write

- first_frame.py: the still the video starts from (today an image file or an in-memory picture).
- animate.py: the model turns the still into frames (`Animator`).
- upscale.py: every frame enlarged 2x by a super-resolution model (`upscale_clip`).
- write: io/video.py writes the clip and its recipe.

Every stage appends what it did and with which settings to `Clip.stages`, so the recipe records the
ordered chain and a recipe replay can repeat it. Conditioning fps (what the model was told) and output fps (the
video's frame rate) are separate: a stage that adds frames changes the second, not the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Clip:
    """Frames on their way to a file: (F, H, W, 3) uint8, their frame rate, and how they were made."""

    frames: np.ndarray
    fps: int  # the output video's frame rate
    stages: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # worth telling the user, e.g. frames of one colour

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])
