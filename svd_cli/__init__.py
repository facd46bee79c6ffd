"""svd: animate a photo into a short video with Stable Video Diffusion.

The library behind the `svd` command. Scripts can use it directly:

    import svd_cli
    from PIL import Image

    animator = svd_cli.load("svd-xt", device="cuda", memory="auto")
    frames = animator.animate_image(Image.open("photo.png"), frames=25, fps=12, seed=1)
    svd_cli.write_frames(frames, "photo.mp4", fps=12, fmt="mp4")

Importing `svd_cli` is cheap; torch and diffusers load on first use. Layout: options.py (the option schema),
session.py (the one orchestration), batch.py (many inputs), stages/ (first frame, animate), models/ (sources,
downloads, adapters), memory/ (savers and profiles), io/ (images, videos, recipes), cli/ (the command line).
"""

from __future__ import annotations

from ._version import __version__
from .errors import InputImageError, ModelUnavailableError, OptionError, OutOfMemoryError, SvdError, UsageError

__all__ = [
    "InputImageError",
    "ModelUnavailableError",
    "OptionError",
    "OutOfMemoryError",
    "SvdError",
    "UsageError",
    "__version__",
    "load",
    "write_frames",
]


def __getattr__(name: str):
    if name == "load":
        from .api import load

        return load
    if name == "write_frames":
        from .io.video import write_frames

        return write_frames
    raise AttributeError(f"module 'svd_cli' has no attribute {name!r}")
