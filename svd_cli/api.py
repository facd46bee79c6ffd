"""The library API for scripts: load a model once, animate pictures or prompts, write videos.

    import svd_cli
    animator = svd_cli.load("svd-xt", memory="auto")
    video = animator.animate_image(Image.open("photo.png"), fps=12)   # video.frames: (F, H, W, 3) uint8
    video.write("photo.mp4")                                          # or svd_cli.write_frames(...)
    print(video.seed)                                                 # drawn at random, as the CLI does

Keywords are the `svd animate` options (see `svd_cli.options.OPTIONS`), checked the same way; an error
names the keyword (`fps=40: must be between 3 and 30.`). It runs on the same `Session` as the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import UsageError
from .io.video import write_frames
from .options import FORMATS, OPTIONS, Request, random_seed, validate
from .progress import Progress
from .session import Session

# Options about a batch, its files or the terminal: a script names its own pictures, files and seeds.
NOT_FOR_SCRIPTS = {"seeds", "variations", "out", "name", "format", "recursive", "overwrite", "json", "quiet",
                   "prompts", "ray", "ray_address", "workers"}  # fmt: skip
# Options that decide how the model is loaded: given to `load`, the same for every call on it.
LOAD_OPTIONS = {"model", "device", "dtype", "memory", "decode_chunk", "vae_tiling", "attention", "unet", "lora",
                "allow_download"}  # fmt: skip
PER_VIDEO = {o.name for o in OPTIONS} - NOT_FOR_SCRIPTS - LOAD_OPTIONS - {"prompt", "seed"}


@dataclass
class Animation:
    """One animated video in memory: its frames and how they were made (what the recipe records)."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    fps: int  # the frame rate they are meant for: N x fps after interpolate=N
    seed: int  # the seed used (drawn at random when none was given)
    model: str  # the animating model's name
    first_frame: Image.Image  # the picture the video starts from (fitted, or drawn from the prompt)
    stages: list[dict[str, Any]] = field(default_factory=list)  # each stage's record, in order
    warnings: list[str] = field(default_factory=list)  # e.g. frames that are all one colour

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def duration(self) -> float:
        """Seconds the video plays."""
        return len(self.frames) / self.fps

    def write(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the frames at their frame rate, atomically; `fmt` (mp4, gif, webm, frames) from the suffix if
        not given (no suffix: a folder of PNG frames)."""
        path = Path(path)
        fmt = fmt or (path.suffix.lower().lstrip(".") or "frames")
        if fmt not in FORMATS:
            raise UsageError(f"{path}: cannot tell the format from the suffix; pass fmt= ({', '.join(FORMATS)}).")
        return write_frames(self.frames, path, fps=self.fps, fmt=fmt)


class ScriptAnimator:
    """A loaded model that animates pictures with the model's defaults filled in and images fitted for you."""

    def __init__(self, session: Session):
        self.session = session

    @property
    def plan(self):
        return self.session.animator.plan if self.session.animator else None

    def animate_image(self, image: Image.Image, *, seed: int | None = None, **options: Any) -> Animation:
        """Animate `image`; keywords as `svd animate`'s options (the list below). With style= the image model
        restyles the picture first. The post stages run too (extend=, loop=, upscale=, interpolate=, watermark=).
        """
        call, seed = self._call(seed, options)
        frame = call.first_frame_from_image(image)
        if call.request.style is not None:
            frame = call.restyle(frame, seed)
        return self._animate(call, frame, seed)

    def animate_prompt(self, prompt: str, *, seed: int | None = None, **options: Any) -> Animation:
        """Draw the first frame from `prompt` with the image model (image_model=, image_steps=, ...), then
        animate it; keywords as for `animate_image`. The same seed draws the picture and its motion."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError("prompt=: give the text of a picture to draw, e.g. 'a lighthouse at dusk'.")
        call, seed = self._call(seed, options | {"prompt": prompt})
        return self._animate(call, call.first_frame_from_prompt(prompt, seed), seed)

    def _call(self, seed: int | None, options: dict[str, Any]) -> tuple[Session, int]:
        """The session for one call's options, checked as the CLI checks them, and its seed."""
        _check_keywords({k: v for k, v in options.items() if k != "prompt"}, allowed=PER_VIDEO)
        seed = random_seed() if seed is None else seed
        request = self.session.request.replace(seed=seed, **options)
        validate(request, need_inputs=False)
        call = self.session.derive(request)
        if call.uses_image_model:
            call.resolve_image_model()
        return call, seed

    def _animate(self, call: Session, frame, seed: int) -> Animation:
        clip = call.finish(call.animate(frame, seed))
        return Animation(frames=clip.frames, fps=clip.fps, seed=seed, model=call.source.name,
                         first_frame=frame.picture, stages=clip.stages, warnings=clip.warnings)  # fmt: skip


def load(model: str = "svd-xt", *, progress: Progress | None = None, **options: Any) -> ScriptAnimator:
    """Resolve (downloading if needed) and load a model.

    Keywords: how to load it (device=, dtype=, memory=, decode_chunk=, vae_tiling=, attention=, unet=, lora=,
    allow_download=), and any per-video option of `animate_image` (frames=, size=, fps=, ...), which then becomes
    the default of every call; the memory plan is made for videos of those frames and size.
    """
    _check_keywords(options, allowed=(LOAD_OPTIONS | PER_VIDEO) - {"model"})
    request = Request(model=model, **options)
    validate(request, need_inputs=False)
    session = Session(request, progress)
    session.resolve()
    session.load(session.settings_for(0, request.size or session.defaults["size"]))
    return ScriptAnimator(session)


def _check_keywords(options: dict, allowed: set[str]) -> None:
    for name in options:
        if name not in allowed:
            raise UsageError(f"{name}=: not a keyword here; use one of {', '.join(sorted(allowed))}.", option=name)


def _keyword_help(names: set[str]) -> str:
    """One line per keyword, from the option schema: name, type, default, what it does."""
    lines = []
    for opt in OPTIONS:
        if opt.name in names:
            kind = getattr(opt.type, "__name__", str(opt.type))
            default = "the model's" if opt.from_model else repr(opt.default)
            lines.append(f"    {opt.name} ({kind}, default {default}): {opt.help}")
    return "\n".join(lines)


ScriptAnimator.animate_image.__doc__ += "\n    Keywords:\n" + _keyword_help(PER_VIDEO)
ScriptAnimator.animate_prompt.__doc__ += "\n    Keywords:\n" + _keyword_help(PER_VIDEO)
load.__doc__ += "\n    Load keywords:\n" + _keyword_help(LOAD_OPTIONS - {"model"})
