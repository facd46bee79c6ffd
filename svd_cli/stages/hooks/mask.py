"""Masked sampling: only the region a mask marks is made; everything else is known content (a cinemagraph's still
photo, an inpainted video's own frames).

Blended latent diffusion (Avrahami et al. 2022), the recipe RePaint and Lumiere's cinemagraphs and inpainting use:
around every denoising step the latents outside the mask are replaced by the known video's (for a cinemagraph the
picture's own latents on every frame), noised to the step's level with the video's initial noise, so the model
invents only the masked region and sees a coherent whole at every level. The masked region is widened to whole
latent cells (one cell is 8x8 pixels for SVD): every pixel the video may show is one the model was free to make.
After decoding, `composite` takes every pixel outside the mask from the known frames themselves, so it is exact,
whatever the decoder does.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Step, StepHook


def latent_region(weights: np.ndarray, factor: int, device: torch.device) -> torch.Tensor:
    """True on every latent cell (`factor` pixels square) where a pixel may move: (1, 1 or frames, 1, h, w) for
    weights (height, width), the same for every frame, or (frames, height, width)."""
    pixels = torch.tensor(weights).reshape(-1, 1, *weights.shape[-2:])
    return (torch.nn.functional.max_pool2d(pixels, factor) > 0).to(device)[None]


class MaskBlend(StepHook):
    """Keeps the latents outside `region` on the known video's path: `known` (its clean latents, one frame or
    every frame), plus the level of the step (`levels[i]`: the noise level after step i, `levels[0]` the first
    step's input) times `noise` (the video's initial noise, unit variance)."""

    def __init__(self, region: torch.Tensor, known: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor):
        self.region, self.known, self.noise = region, known, noise
        self.levels = levels  # a tensor: on the simulator's fake device its values are never read

    def _blend(self, latents: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return torch.where(self.region, latents, self.known + level * self.noise)

    def before(self, step: Step) -> None:
        # The first step's input (the scheduler's initial noise) at its level; every later step's input is the
        # blend `after` made.
        if step.number == 1:
            step.latents = self._blend(step.latents, self.levels[0])

    def after(self, step: Step) -> None:
        # The next step's input, and the clean prediction the preview and a draft's keeper see.
        step.latents = self._blend(step.latents, self.levels[step.number])
        if step.denoised is not None:
            step.denoised = torch.where(self.region, step.denoised, self.known)


def composite(frames: np.ndarray, known: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each frame blended into the known content by the mask's `weights`: where a weight is 0 the known pixel
    exactly, where it is 1 the frame's. `known` is one picture (H, W, 3) or one per frame, uint8; `weights` one
    (H, W) or one per frame; `frames` are uint8 or floats in [0, 1], as decoded."""
    scale = 1.0 if frames.dtype == np.uint8 else 1.0 / 255.0
    out = np.empty_like(frames)
    for index, frame in enumerate(frames):  # one frame at a time: no float copy of the whole video
        alpha = (weights if weights.ndim == 2 else weights[index])[:, :, None]
        picture = (known if known.ndim == 3 else known[index]).astype(np.float32) * scale
        blended = frame.astype(np.float32) * alpha + picture * (1.0 - alpha)
        out[index] = np.round(blended) if frames.dtype == np.uint8 else blended
    return out
