"""A small library API for scripts: load a model once, animate PIL images, write videos.

import svd_cli
animator = svd_cli.load("svd-xt", memory="auto")
frames = animator.animate_image(Image.open("photo.png"), fps=12, seed=1)   # (F, H, W, 3) uint8
svd_cli.write_frames(frames, Path("photo.mp4"), fps=12, fmt="mp4")
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import UsageError
from .progress import Progress


class ScriptAnimator:
    """An Animator with the model's defaults filled in and images fitted to size for you."""

    def __init__(self, animator, defaults):
        self.animator = animator
        self.defaults = defaults

    @property
    def plan(self):
        return self.animator.plan

    def animate_image(
        self,
        image: Image.Image,
        *,
        frames: int | None = None,
        fps: int | None = None,
        motion_bucket: int | None = None,
        noise_aug: float = 0.02,
        steps: int | None = None,
        min_cfg: float = 1.0,
        max_cfg: float = 3.0,
        seed: int = 0,
        size: tuple[int, int] | None = None,
        fit: str = "crop",
        progress: Progress | None = None,
    ) -> np.ndarray:
        from .images import fit_image, is_portrait
        from .pipeline import GenerationSettings
        from .settings import AnimateRequest, validate

        d = self.defaults
        request = AnimateRequest(
            inputs=["<image>"], frames=frames, fps=fps, motion_bucket=motion_bucket, noise_aug=noise_aug,
            steps=steps, min_cfg=min_cfg, max_cfg=max_cfg, seed=seed, fit=fit,
        )  # fmt: skip
        validate(request)
        image = image.convert("RGB")
        width, height = size or (d.size[::-1] if is_portrait(image.size) else d.size)
        settings = GenerationSettings(
            frames=frames or d.frames,
            fps=fps or d.fps,
            motion_bucket=d.motion_bucket if motion_bucket is None else motion_bucket,
            noise_aug=noise_aug,
            steps=steps or d.steps,
            min_cfg=min_cfg,
            max_cfg=max_cfg,
            seed=seed,
            width=width,
            height=height,
        )
        picture = fit_image(image, width, height, fit, (255, 255, 255))
        return self.animator.animate(picture, settings, progress)


def load(
    model: str = "svd-xt",
    *,
    device: str = "auto",
    dtype: str = "auto",
    memory: str = "auto",
    frames: int | None = None,
    size: tuple[int, int] = (1024, 576),
    progress: Progress | None = None,
) -> ScriptAnimator:
    """Resolve (downloading if needed), load and configure a model; `memory` as for `svd animate`.

    `frames` and `size` only inform `memory="auto"` about the videos you plan to make.
    """
    from .hub import resolve_model
    from .loading import load_model, resolve_device, resolve_dtype
    from .memory import MEMORY_CHOICES, choose_plan
    from .pipeline import Animator
    from .settings import model_defaults, read_unet_config

    if memory not in MEMORY_CHOICES:
        raise UsageError(f"memory={memory!r}: choose one of {', '.join(MEMORY_CHOICES)}.")
    source = resolve_model(model, progress=progress)
    defaults = model_defaults(source, read_unet_config(source.path))
    torch_device = resolve_device(device)
    loaded = load_model(source, torch_device, resolve_dtype(dtype, torch_device))
    plan = choose_plan(loaded, memory, {}, (frames or defaults.frames, size[0], size[1]))
    return ScriptAnimator(Animator(loaded, plan), defaults)
