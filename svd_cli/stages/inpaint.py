"""The inpaint stage: the masked region of an existing video made again, every other pixel of every frame kept.

1. The first frame's region is filled from the pixels around it (`filled`: each hole pixel takes the mean of the
   known pixels in the smallest window around it that holds any), a smooth guess with no model and no download.
   It is only the video model's conditioning picture: the model draws the region itself.
2. The video model samples windows of its own frame count with the mask's blend (hooks/mask.py): outside the
   mask, at every step, the input's own frames noised to the step's level. A video longer than one window is
   done in windows that overlap by one frame, as extend chains clips: each window starts from the frame the one
   before it ended on (already inpainted), with seed + k; the shared frame appears once.
3. After decoding, every pixel outside the (feathered) mask is the input frame's own.
A video whose sides are not multiples of 64 (1280x720...) is inpainted grown to the next multiples (its last row
and column repeated, and kept) and cut back to its size.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputImageError, UsageError, ref
from ..io.images import fit_image, open_mask, same_aspect
from ..io.video import read_frames
from ..options import SIZE_STEP, GenerationSettings
from ..progress import Progress
from .extend import segment_seed
from .first_frame import box_blurred

# A mask given as one of these (or a folder of PNGs) is a video of masks, one per frame; anything else a picture.
MASK_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")


def working_size(width: int, height: int) -> tuple[int, int]:
    """The size the model inpaints a video of width x height at: each side rounded up to a multiple of 64."""
    return -(-width // SIZE_STEP) * SIZE_STEP, -(-height // SIZE_STEP) * SIZE_STEP


def padded(values: np.ndarray, size: tuple[int, int], kept: bool = False) -> np.ndarray:
    """Frames (N, H, W, ...) grown at the right and bottom to `size`: by repeating their last column and row, or
    (`kept`, a mask's weights) with 0, so the added pixels are kept and cut off again after inpainting."""
    grow = ((0, 0), (0, size[1] - values.shape[1]), (0, size[0] - values.shape[2])) + ((0, 0),) * (values.ndim - 3)
    return np.pad(values, grow, mode="constant") if kept else np.pad(values, grow, mode="edge")


def video_mask(path: Path, count: int, size: tuple[int, int], feather: int) -> np.ndarray:
    """The weights of the mask at `path` for a video of `count` frames of `size`, (1 or count, height, width): a
    picture (the same region in every frame) or a video of masks (one per frame), each of the video's shape,
    scaled to it, its edge feathered over `feather` pixels; white (1) is made again, black (0) kept exactly."""
    if path.is_dir() or path.suffix.lower() in MASK_VIDEO_SUFFIXES:
        pictures = [Image.fromarray(frame).convert("L") for frame in itertools.islice(read_frames(path), count)]
        if len(pictures) < count:
            raise UsageError(
                f"{ref('mask')} {path} has {len(pictures)} frames and the video {count}: a video of masks needs one "
                "per frame (or give one picture for every frame).",
                option="mask",
            )
    else:
        try:
            pictures = [open_mask(path)]
        except InputImageError as exc:
            raise UsageError(f"{ref('mask')} {exc}", option="mask") from None
    (mask_width, mask_height), (width, height) = pictures[0].size, size
    if not same_aspect((mask_width, mask_height), (width, height)):
        raise UsageError(f"{ref('mask')} {path} is {mask_width}x{mask_height} and the video {width}x{height}: a mask "
                         f"needs the video's shape (any size of it).", option="mask")  # fmt: skip
    levels = [np.asarray(fit_image(p, width, height, "stretch", 0), dtype=np.int64) for p in pictures]
    weights = np.stack([box_blurred(level, feather) / 255.0 for level in levels]).astype(np.float32)
    if weights.max() == 0:
        raise UsageError(f"{ref('mask')} {path} is black everywhere: nothing to fill; paint white over the region "
                         "to make again.", option="mask")  # fmt: skip
    if weights.min() == 1:
        raise UsageError(f"{ref('mask')} {path} is white everywhere: that is a new video, not a region of this one; "
                         "use svd animate on its first frame.", option="mask")  # fmt: skip
    return weights


def filled(picture: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`picture` (H, W, 3) uint8 with the pixels where `hole` is True replaced by the mean of the known pixels in
    the smallest window (radius 1, 2, 4, ...) around each that holds any."""
    values = picture.astype(np.float64)
    known = ~hole
    result, todo = values.copy(), hole.copy()
    radius = 1
    while todo.any() and known.any():
        counts = _window_sums(known.astype(np.float64), radius)
        sums = np.stack([_window_sums(values[..., c] * known, radius) for c in range(3)], axis=-1)
        take = todo & (counts > 0)
        result[take] = sums[take] / counts[take][:, None]
        todo &= ~take
        radius *= 2
    return np.clip(np.round(result), 0, 255).astype(np.uint8)


def _window_sums(values: np.ndarray, radius: int) -> np.ndarray:
    """The sum of `values` over the (2 radius + 1)^2 window around each pixel (zero beyond the borders)."""
    side = 2 * radius + 1
    sums = np.pad(np.pad(values, radius).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return sums[side:, side:] - sums[:-side, side:] - sums[side:, :-side] + sums[:-side, :-side]


def windows(count: int, frames: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of each window over a video of `count` frames, `frames` at most each, every
    window after the first starting on the last frame of the one before."""
    spans, start = [], 0
    while True:
        length = min(frames, count - start)
        spans.append((start, length))
        if start + length >= count:
            return spans
        start += length - 1


def inpaint_frames(
    animate: Callable[..., np.ndarray],
    frames: np.ndarray,
    weights: np.ndarray,
    settings: GenerationSettings,
    progress: Progress,
) -> tuple[np.ndarray, list[dict]]:
    """The video `frames` (N, H, W, 3) with the region `weights` (1 or N, H, W) marks made again by `animate` (an
    VideoModel's), and a record per window for the recipe."""
    spans = windows(len(frames), settings.frames)
    made: list[np.ndarray] = []
    records = []
    for k, (start, length) in enumerate(spans):
        # 1. The window's conditioning picture: the first frame with its region filled, or the frame the window
        #    before ended on.
        picture = filled(frames[0], weights[0] > 0) if k == 0 else made[-1][-1]
        seed = segment_seed(settings.seed, k)
        if len(spans) > 1:
            progress.note(f"Window {k + 1}/{len(spans)}: frames {start + 1}-{start + length} (seed {seed})")
        # 2-3. The window sampled with the input's frames kept outside the mask, and composited into them.
        window = animate(Image.fromarray(picture), settings.replace(frames=length, seed=seed),
                         mask=weights[0] if len(weights) == 1 else weights[start : start + length],
                         known=frames[start : start + length])  # fmt: skip
        made.append(window if k == 0 else window[1:])  # the frame two windows share appears once
        records.append({"window": k, "first_frame": start, "frames": length, "seed": seed})
    return np.concatenate(made), records
