"""The library API for scripts: load a model once, animate pictures or prompts, write videos.

    import svd_cli
    model = svd_cli.load("svd-xt", memory="auto")
    video = model.animate_image(Image.open("photo.png"), fps=12)   # video.frames: (F, H, W, 3) uint8
    video.write("photo.mp4")                                          # or svd_cli.write_frames(...)
    print(video.seed)                                                 # drawn at random, as the CLI does

Keywords are the `svd animate` options (see `svd_cli.options.OPTIONS`), checked the same way; an error
names the keyword (`fps=40: must be between 3 and 30.`). It runs on the same `Session` as the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from .errors import UsageError
from .options import OPTIONS, Request, random_seed, validate
from .progress import Progress
from .result import Animation
from .session import Session

if TYPE_CHECKING:
    from .memory.profiles import MemoryPlan
    from .stages.hooks import StepCallback

# Options about a batch, its files or the terminal: a script names its own pictures, files and seeds (and watches
# its steps with on_step rather than a preview file; gives each picture its mask=, and animate_image one picture,
# not several keyframes).
NOT_FOR_SCRIPTS = {"seeds", "variations", "out", "name", "format", "recursive", "overwrite", "json", "quiet",
                   "prompts", "ray", "ray_address", "workers", "preview", "keep_preview", "masks",
                   "keyframes", "gallery"}  # fmt: skip
# Options that decide how the model is loaded: given to `load`, the same for every call on it.
LOAD_OPTIONS = {"model", "device", "dtype", "memory", "decode_chunk", "vae_tiling", "attention", "unet", "lora",
                "allow_download", "weights", "compile"}  # fmt: skip
PER_VIDEO = {o.name for o in OPTIONS} - NOT_FOR_SCRIPTS - LOAD_OPTIONS - {"seed"}  # prompt=: what a styled photo shows


class LoadedModel:
    """A loaded model that animates pictures with the model's defaults filled in and images fitted for you."""

    def __init__(self, session: Session):
        self.session = session

    @property
    def memory_plan(self) -> MemoryPlan | None:
        """The memory plan the model runs under (memory/profiles.py); None while the image model holds the device."""
        return self.session.video_model.memory_plan if self.session.video_model else None

    def animate_image(
        self,
        image: Image.Image | str | os.PathLike,
        *,
        seed: int | None = None,
        on_step: StepCallback | None = None,
        **options: Any,
    ) -> Animation:
        """Animate `image` (a PIL picture, or a picture file's path, opened as `svd animate` opens one); keywords
        as `svd animate`'s options (the list below). With style= the image model restyles the picture first. The
        post stages run too (extend=, loop=, upscale=, interpolate=, watermark=).

        `on_step(step, steps, latents)` is called after every denoising step (step 1..steps of each clip, the
        latents on the device); whatever it raises stops the run and reaches you unchanged.
        """
        call, seed = self._call(seed, options, on_step)
        frame = _first_frame(call, image)
        if call.request.style is not None:
            frame = call.restyle(frame, seed)
        return self._animate(call, frame, seed, on_step)

    def animate_prompt(
        self, prompt: str, *, seed: int | None = None, on_step: StepCallback | None = None, **options: Any
    ) -> Animation:
        """Draw the first frame from `prompt` with the image model (image_model=, image_steps=, ...), then
        animate it; keywords and `on_step` as for `animate_image`. The same seed draws the picture and its
        motion."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError("prompt=: give the text of a picture to draw, e.g. 'a lighthouse at dusk'.")
        if "prompt" in options:
            raise UsageError("prompt=: give the prompt once, as animate_prompt's first argument.", option="prompt")
        call, seed = self._call(seed, options | {"prompt": prompt}, on_step)
        return self._animate(call, call.first_frame_from_prompt(prompt, seed), seed, on_step)

    def _call(self, seed: int | None, options: dict[str, Any], on_step: StepCallback | None) -> tuple[Session, int]:
        """The session for one call's options, checked as the CLI checks them, and its seed."""
        _check_keywords(options, allowed=PER_VIDEO)
        if on_step is not None and not callable(on_step):
            raise UsageError(
                f"on_step={on_step!r}: give a function fn(step, steps, latents), or None.", option="on_step"
            )
        seed = random_seed() if seed is None else seed
        request = self.session.request.replace(seed=seed, **options)
        validate(request, need_inputs=False)
        call = self.session.derive(request)
        if call.uses_image_model:
            call.resolve_image_model()
        return call, seed

    def _animate(self, call: Session, frame, seed: int, on_step: StepCallback | None) -> Animation:
        video = call.make(frame, call.settings_for(seed, frame.picture.size), on_step=on_step)
        video.signing = call.signing_key()  # video.write signs its MP4 or GIF with it
        return video


def _first_frame(call: Session, image: Image.Image | str | os.PathLike):
    """The first frame of `image`: a PIL picture, or the path of a picture file, opened as the CLI opens one."""
    if isinstance(image, Image.Image):
        return call.first_frame_from_image(image)
    if isinstance(image, str | os.PathLike):
        return call.first_frame_from_file(Path(image))
    raise UsageError(f"image={type(image).__name__}: give a PIL image or the path of a picture file.", option="image")


def load(model: str = "svd-xt", *, progress: Progress | None = None, **options: Any) -> LoadedModel:
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
    return LoadedModel(session)


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


LoadedModel.animate_image.__doc__ += "\n    Keywords:\n" + _keyword_help(PER_VIDEO)
LoadedModel.animate_prompt.__doc__ += "\n    Keywords:\n" + _keyword_help(PER_VIDEO - {"prompt"})
load.__doc__ += "\n    Load keywords:\n" + _keyword_help(LOAD_OPTIONS - {"model"})
