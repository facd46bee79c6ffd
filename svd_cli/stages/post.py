"""The post stages, in the one order they run: what happens to a clip after the model made it.

Each post stage is one module that ends with its `PostStage` (stages/__init__.py says what one holds). The order
is POST_STAGES, written here and nowhere else. Adding a post stage: its module, its options in options.py, one
entry below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .interpolate import INTERPOLATE
from .loop import LOOP
from .upscale import UPSCALE
from .watermark import WATERMARK

if TYPE_CHECKING:
    from ..options import Request
    from . import PostStage

POST_STAGES: tuple[PostStage, ...] = (LOOP, UPSCALE, INTERPOLATE, WATERMARK)


def wanted_stages(request: Request) -> list[PostStage]:
    """The post stages `request` asks for, in order."""
    return [stage for stage in POST_STAGES if stage.wanted(request)]


def model_stages(request: Request) -> list[PostStage]:
    """The wanted post stages that read a weights file for `request` (read before the first video)."""
    return [stage for stage in wanted_stages(request) if stage.needs_model(request)]
