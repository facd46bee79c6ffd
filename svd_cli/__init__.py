"""svd: animate a photo into a short video with Stable Video Diffusion.

The library behind the `svd` command. Scripts can use it directly:

    import svd_cli
    from PIL import Image

    model = svd_cli.load("svd-xt", device="cuda", memory="auto")
    video = model.animate_image(Image.open("photo.png"), frames=25, fps=12, seed=1)
    video.write("photo.mp4")  # or svd_cli.write_frames(video.frames, "photo.mp4", fps=video.fps, fmt="mp4")

Importing `svd_cli` is cheap; torch and diffusers load on first use. Layout (README's "Layout" names every
module): options.py (the option schema), session.py (the model, loaded once, and the stages it runs), jobs.py and
batch.py (many inputs planned, then run), result.py (what a made video gives back), stages/ (first frame, animate,
the post stages in stages/post.py), planning/ (simulation and the auto choice), models/ (sources, downloads,
adapters), memory/ (savers and profiles), io/ (images, videos, recipes), cli/ (the command line).
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .errors import (
    InputImageError,
    ModelLoadError,
    ModelUnavailableError,
    NonFiniteError,
    OptionError,
    OutOfMemoryError,
    SvdError,
    UsageError,
)
from .progress import NullProgress, Progress

# Imported on first use, so that `import svd_cli` (and `svd --help`) stays instant: these pull in numpy and PIL.
LAZY = {"load": "api", "Animation": "result", "LoadedModel": "api", "write_frames": "io.video"}

__all__ = [
    "Animation",
    "InputImageError",
    "ModelLoadError",
    "ModelUnavailableError",
    "NonFiniteError",
    "NullProgress",
    "OptionError",
    "OutOfMemoryError",
    "Progress",
    "LoadedModel",
    "SvdError",
    "UsageError",
    "__version__",
    "load",
    "write_frames",
]


def __getattr__(name: str):
    if name in LAZY:
        return getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'svd_cli' has no attribute {name!r}")
