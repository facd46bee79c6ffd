"""The live preview beside an output: `NAME.preview.webp`, a small animated WebP of where the video is going.

It is rewritten after every denoising step under a temporary name and renamed into place, so a viewer that
reloads it never reads half a file, and it carries svd's mark (io/safety.py) so svd only ever replaces or
removes its own. It goes when the video is written, unless it is asked to stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .safety import EXIF_DESCRIPTION, PREVIEW_MARK, PREVIEW_SUFFIX, is_own_preview, remove
from .video import atomic_output

if TYPE_CHECKING:
    import numpy as np

PREVIEW_WIDTH = 384  # pixels: enough to judge motion, a few KB a frame
PREVIEW_QUALITY = 60


def preview_path(output: Path, fmt: str) -> Path:
    """The preview beside an output: fox.mp4 -> fox.preview.webp, a frames folder fox/ -> fox.preview.webp."""
    base = output if fmt == "frames" else output.with_suffix("")
    return base.with_name(base.name + PREVIEW_SUFFIX)


def preview_blocked(path: Path) -> bool:
    """Whether a file svd did not make holds the preview's name (svd then writes no preview there)."""
    return path.exists() and not is_own_preview(path)


def write_preview(frames: np.ndarray, path: Path, fps: int) -> None:
    """Uint8 frames (F, H, W, 3) as an animated WebP at `path`, at most PREVIEW_WIDTH wide, atomically."""
    from PIL import Image

    pictures = [Image.fromarray(frame) for frame in frames]
    width, height = pictures[0].size
    if width > PREVIEW_WIDTH:
        size = (PREVIEW_WIDTH, max(1, round(height * PREVIEW_WIDTH / width)))
        pictures = [picture.resize(size, Image.Resampling.BILINEAR) for picture in pictures]
    mark = Image.Exif()
    mark[EXIF_DESCRIPTION] = PREVIEW_MARK
    with atomic_output(path) as tmp:
        pictures[0].save(tmp, format="WEBP", save_all=True, append_images=pictures[1:], duration=round(1000 / fps),
                         loop=0, quality=PREVIEW_QUALITY, exif=mark)  # fmt: skip


def discard_preview(path: Path) -> None:
    """Remove the preview at `path` if svd wrote it (anything else there is left alone)."""
    if is_own_preview(path):
        remove(path)
