"""The upscale post stage: every frame of a clip enlarged 2x by a super-resolution model (models/upscaler.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..memory.profiles import tile_for
from ..models.loading import resolve_device
from ..models.upscaler import load_upscaler
from . import Clip, PostStage, StageContext

if TYPE_CHECKING:
    from ..models.upscaler import Upscaler
    from ..progress import Progress


def upscale_clip(clip: Clip, upscaler: Upscaler, tile: int | None, progress: Progress | None = None) -> Clip:
    """A new clip with every frame upscaled (same fps and warnings), its recipe record appended to `stages`."""
    frames = upscaler.upscale(clip.frames, tile, progress)
    record = {"stage": "upscale", "factor": upscaler.scale, "model": upscaler.name, "sha256": upscaler.sha256,
              "tile": tile}  # fmt: skip
    return replace(clip, frames=frames, stages=[*clip.stages, record], warnings=list(clip.warnings))


def _read_upscaler(source, request) -> Upscaler:
    """The upscaler file, read onto the CPU in the dtype for the request's device (placed while it works)."""

    return load_upscaler(source, resolve_device(request.device), placed=False)


def _run(clip: Clip, context: StageContext) -> Clip:
    return upscale_clip(clip, context.model, tile_for(context.profile), context.progress)


UPSCALE = PostStage("upscale", wanted=lambda req: req.upscale > 1, run=_run,
                    model_kind="upscaler", needs_model=lambda req: True, read_model=_read_upscaler)  # fmt: skip
