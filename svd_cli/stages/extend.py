"""Longer videos: clip after clip, each animated from the last frame of the one before (`extend`).

This is how NVIDIA's Video LDM and ComfyUI users make long videos from a short-clip model. Two things go wrong
when clips are chained, and this module answers both:

- The frame two clips share would appear twice: every clip after the first drops its first frame, so
  F + N x (F - 1) frames come out of 1 + N clips of F.
- Each clip drifts a little in colour and contrast from the image it starts from, and the drift adds up clip
  after clip (the next clip starts from an already-drifted frame). `match_colors` moves each later clip's
  per-channel mean and spread back to the first clip's (a Reinhard-style transfer in RGB), which removes the
  accumulated shift without touching the motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..options import MAX_SEED

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ColorStats:
    """Per-channel mean and standard deviation of a clip, in 0-255 levels."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def color_stats(frames: np.ndarray) -> ColorStats:
    """From each channel's histogram: exact, and a fraction of the time of summing every pixel in floating point."""
    import numpy as np

    levels = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for channel in range(frames.shape[-1]):
        counts = np.bincount(frames[..., channel].ravel(), minlength=256).astype(np.float64)
        mean = float(levels @ counts / counts.sum())
        means.append(mean)
        stds.append(float(np.sqrt(((levels - mean) ** 2) @ counts / counts.sum())))
    return ColorStats(tuple(means), tuple(stds))


def match_colors(frames: np.ndarray, reference: ColorStats) -> np.ndarray:
    """`frames` with each channel's mean and spread moved to `reference`'s (uint8 in, uint8 out).

    The move is the same for every pixel of a channel, so it is a 256-entry table per channel.
    """
    import numpy as np

    own = color_stats(frames)
    levels = np.arange(256, dtype=np.float64)
    out = np.empty_like(frames)
    for channel in range(frames.shape[-1]):
        mean, std = own.mean[channel], own.std[channel]
        gain = reference.std[channel] / std if std > 1e-6 else 1.0
        table = np.clip(np.rint((levels - mean) * gain + reference.mean[channel]), 0, 255).astype(np.uint8)
        out[..., channel] = table[frames[..., channel]]
    return out


def color_drift(frames: np.ndarray, reference: ColorStats) -> dict[str, float]:
    """How far a clip's colours are from the reference: mean absolute difference over the channels, in levels."""
    own = color_stats(frames)
    return {
        "mean": sum(abs(a - b) for a, b in zip(own.mean, reference.mean, strict=True)) / 3,
        "std": sum(abs(a - b) for a, b in zip(own.std, reference.std, strict=True)) / 3,
    }


def segment_seed(seed: int, index: int) -> int:
    """The seed of segment `index`: the video's seed plus the segment number (kept within the seed range)."""

    return (seed + index) % (MAX_SEED + 1)
