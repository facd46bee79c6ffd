"""The upscale post stage: every frame of a clip enlarged 2x by a super-resolution model (models/upscaler.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from . import Clip

if TYPE_CHECKING:
    from ..models.upscaler import Upscaler
    from ..progress import Progress


def upscale_clip(clip: Clip, upscaler: Upscaler, tile: int | None, progress: Progress | None = None) -> Clip:
    """A new clip with every frame upscaled (same fps and warnings), its recipe record appended to `stages`."""
    frames = upscaler.upscale(clip.frames, tile, progress)
    record = {"stage": "upscale", "factor": upscaler.scale, "model": upscaler.name, "sha256": upscaler.sha256,
              "tile": tile}  # fmt: skip
    return replace(clip, frames=frames, stages=[*clip.stages, record], warnings=list(clip.warnings))
