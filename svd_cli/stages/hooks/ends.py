"""Both ends fixed (end): a video that starts on one picture and ends on another, sampled from both sides at
every step, with the stock model (ViBiDSampler, Yang et al., ICLR 2025; vibidsampler/vibid, `vibidsampler.py`).

The hook makes each step's update itself, in place of the scheduler's Euler step. On SVD's EDM sigmas, from
sigma_i to sigma_{i+1}:
1. Forward: both halves of guidance from the start picture's conditioning; the guided clean estimate (a constant
   scale, `min_cfg`) gets the end picture's latents as its last frame (the authors' "DDS" step: a conjugate-gradient
   solve whose operator masks that frame, which converges in one iteration to exactly that replacement); then
   CFG++'s step, which takes its direction from the unconditional estimate:
   x = estimate + (x - unconditional) / sigma_i * sigma_{i+1}.
2. Noise back up to sigma_i: x += sqrt(sigma_i^2 - sigma_{i+1}^2) * fresh noise.
3. Backward: the frames reversed, the same step from the end picture's conditioning (scale `max_cfg`) with the
   start picture's latents as the (reversed) last frame; the frames turned back.
Every step costs two guided denoiser evaluations where a normal guided step costs one. After the last step the
first frame's latents are the start picture's exactly; the last frame is the backward pass's estimate of the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import Step, StepHook

# Both halves of guidance from one picture's conditioning: (unconditional, conditional) predictions of the
# denoiser module for its scaled input and timestep.
Halves = Callable[[Any, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def edm_estimates(halves: Halves, unet: Any, x: torch.Tensor, sigma: torch.Tensor, timestep: torch.Tensor):
    """Both clean estimates (unconditional, conditional) of a v-prediction denoiser (SVD's, on EDM sigmas with
    sigma_data 1): the model sees x / sqrt(sigma^2 + 1) and the scheduler's timestep, and
    x0 = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v."""
    scale = (sigma**2 + 1) ** 0.5
    unconditional, conditional = halves(unet, x / scale, timestep)
    return x / scale**2 - sigma / scale * unconditional, x / scale**2 - sigma / scale * conditional


class BothEnds(StepHook):
    """The bidirectional step: `start` and `end` are the two pictures' clean latents (1, 1, C, h, w); `forward`
    and `backward` both halves of guidance with each picture's conditioning, `scales` their guidance scales;
    `levels` the scheduler's sigmas (one more than the steps, the last 0); `noise()` draws step 2's fresh noise."""

    def __init__(self, *, start: torch.Tensor, end: torch.Tensor, forward: Halves, backward: Halves,
                 scales: tuple[float, float], levels: torch.Tensor, noise: Callable[[], torch.Tensor]):  # fmt: skip
        self.first, self.last, self.forward, self.backward = start, end, forward, backward  # not start/end: methods
        self.unet: Any = None
        self.scales, self.noise = scales, noise
        self.levels = levels  # a tensor: on the simulator's fake device its values are never read
        self.estimate: torch.Tensor | None = None  # the last half step's clean estimate (with its last frame set)

    def module(self, denoiser: Any) -> Any:
        self.unet = denoiser  # the module both passes call
        return denoiser

    def update(self, step: Step) -> bool:
        sigma, following = self.levels[step.number - 1], self.levels[step.number]
        # 1. Forward, from the start picture, towards the end picture's latents as the last frame.
        x = self._half_step(step.latents, step.timestep, self.forward, self.scales[0], self.last, sigma, following)
        # 2. Back up to this step's level.
        x = x + self.noise() * (sigma**2 - following**2) ** 0.5
        # 3. Backward, from the end picture, the frames reversed.
        x = self._half_step(x.flip(1), step.timestep, self.backward, self.scales[1], self.first, sigma, following)
        step.latents, step.denoised = x.flip(1), self.estimate.flip(1)
        return True

    def _half_step(self, x, timestep, halves: Halves, scale: float, last, sigma, following):
        unconditional, conditional = edm_estimates(halves, self.unet, x, sigma, timestep)
        estimate = unconditional + scale * (conditional - unconditional)
        estimate[:, -1:] = last
        self.estimate = estimate
        return estimate + (x - unconditional) / sigma * following
