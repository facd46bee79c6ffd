"""The library API for scripts: load a model once, animate PIL images, write videos.

    import svd_cli
    animator = svd_cli.load("svd-xt", memory="auto")
    frames = animator.animate_image(Image.open("photo.png"), fps=12, seed=1)   # (F, H, W, 3) uint8
    svd_cli.write_frames(frames, "photo.mp4", fps=12, fmt="mp4")

Keywords are the `svd animate` options (see `svd_cli.options.OPTIONS`), checked the same way; an error
names the keyword (`fps=40: must be between 3 and 30.`). It runs on the same `Session` as the CLI.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .errors import UsageError
from .options import BY_NAME, Request, validate
from .progress import Progress
from .session import Session

# Options that are about a batch or the terminal, not about animating one picture in memory. The first
# frame from a prompt or a style is the command line's for now (a script can draw its own picture).
NOT_FOR_SCRIPTS = {"seeds", "variations", "out", "name", "format", "recursive", "overwrite", "json", "quiet",
                   "allow_download", "prompt", "prompts", "style", "style_strength", "image_model",
                   "negative_prompt", "image_steps", "image_cfg"}  # fmt: skip
NOT_FOR_SCRIPTS |= {"ray", "ray_address", "workers"}  # how a batch is spread over machines
LOAD_OPTIONS = {"model", "device", "dtype", "memory", "decode_chunk", "vae_tiling", "attention", "unet", "lora"}


class ScriptAnimator:
    """A loaded model that animates pictures with the model's defaults filled in and images fitted for you."""

    def __init__(self, session: Session):
        self.session = session

    @property
    def plan(self):
        return self.session.animator.plan if self.session.animator else None

    def animate_image(self, image: Image.Image, *, seed: int = 0, **options: Any) -> np.ndarray:
        """Frames (F, H, W, 3) uint8 for `image`; keywords as `svd animate`'s options (frames=, fps=, size=...).

        The post stages run too (extend=, loop=, upscale=, interpolate=, watermark=): with interpolate= the frames
        are meant for N x fps.
        """
        _check_keywords(options, allowed=set(BY_NAME) - NOT_FOR_SCRIPTS - LOAD_OPTIONS)
        request = self.session.request.replace(seed=seed, **options)
        validate(request, need_inputs=False)
        call = self.session.derive(request)
        return call.finish(call.animate(call.first_frame_from_image(image), seed)).frames


def load(
    model: str = "svd-xt",
    *,
    frames: int | None = None,
    size: tuple[int, int] | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ScriptAnimator:
    """Resolve (downloading if needed) and load a model, with a memory plan for videos of `frames` x `size`.

    Keywords: device=, dtype=, memory=, decode_chunk=, vae_tiling=, attention= as for `svd animate`.
    `frames` and `size` given here also become the defaults of every `animate_image` call.
    """
    _check_keywords(options, allowed=LOAD_OPTIONS - {"model"})
    request = Request(model=model, frames=frames, size=size, **options)
    session = Session(request, progress)
    session.resolve()
    session.load(session.settings_for(0, request.size or session.defaults["size"]))
    return ScriptAnimator(session)


def _check_keywords(options: dict, allowed: set[str]) -> None:
    for name in options:
        if name not in allowed:
            raise UsageError(f"{name}=: not a keyword here; use one of {', '.join(sorted(allowed))}.", option=name)
