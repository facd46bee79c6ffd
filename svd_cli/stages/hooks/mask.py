"""Masked sampling (cinemagraphs): only the region a mask marks moves; everything else stays the photo.

Blended latent diffusion (Avrahami et al. 2022), the recipe RePaint and Lumiere's cinemagraphs use: around every
denoising step the latents outside the mask are replaced by the still video's (the picture's own latents on every
frame), noised to the step's level with the video's initial noise, so the model invents only the masked region
and sees a coherent whole at every level. The masked region is widened to whole latent cells (one cell is 8x8
pixels for SVD): every pixel the animation may show is one the model was free to move. After decoding,
`composite` takes every pixel outside the mask from the picture itself, so it is exact, whatever the decoder does.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Step, StepHook


def latent_region(weights: np.ndarray, factor: int, device: torch.device) -> torch.Tensor:
    """True on every latent cell (`factor` pixels square) where a pixel may move: (1, 1, 1, h, w)."""
    pixels = torch.from_numpy(weights)[None, None]
    return (torch.nn.functional.max_pool2d(pixels, factor) > 0).to(device)[None]


class MaskBlend(StepHook):
    """Keeps the latents outside `region` on the still video's path: `still` (1, 1, C, h, w), plus the level of
    the step (`levels[i]`: the noise level after step i, `levels[0]` the first step's input) times `noise` (the
    video's initial noise, unit variance)."""

    def __init__(self, region: torch.Tensor, still: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor):
        self.region, self.still, self.noise = region, still, noise
        self.levels = [float(level) for level in levels]

    def _blend(self, latents: torch.Tensor, level: float) -> torch.Tensor:
        return torch.where(self.region, latents, self.still + level * self.noise)

    def before(self, step: Step) -> None:
        # The step's input (the scheduler's initial noise on step 1, the last step's blend later) at its level.
        step.latents = self._blend(step.latents, self.levels[step.number - 1])

    def after(self, step: Step) -> None:
        # The next step's input, and the clean prediction the preview and a draft's keeper see.
        step.latents = self._blend(step.latents, self.levels[step.number])
        if step.denoised is not None:
            step.denoised = torch.where(self.region, step.denoised, self.still)


def composite(frames: np.ndarray, picture: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each frame blended into `picture` (uint8 (H, W, 3)) by the mask's `weights`: where a weight is 0 the
    picture's pixel exactly, where it is 1 the frame's. `frames` are uint8 or floats in [0, 1], as decoded."""
    alpha = weights[:, :, None]
    still = picture.astype(np.float32)
    if frames.dtype != np.uint8:
        still = still / 255.0
    out = np.empty_like(frames)
    for index, frame in enumerate(frames):  # one frame at a time: no float copy of the whole video
        blended = frame.astype(np.float32) * alpha + still * (1.0 - alpha)
        out[index] = np.round(blended) if frames.dtype == np.uint8 else blended
    return out
