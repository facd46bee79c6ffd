"""The SVD family's sampler besides diffusers' Euler: the consistency sampler AnimateLCM-SVD was distilled for.

AnimateLCM-SVD-xt (Wang et al., "AnimateLCM", 2024) is SVD-XT's UNet distilled into a consistency model: from
any noise level it predicts the clean video in one call. Sampling takes a few of those predictions, each
time adding fresh noise at the next (lower) level, and ends on the last prediction:

    x = noise * sqrt(sigma_0^2 + 1)
    for each level sigma_i:   x0 = c_skip(sigma_i) x + c_out(sigma_i) F(x / sqrt(sigma_i^2 + 1), 0.25 ln sigma_i)
                              x  = x0 + sigma_{i+1} z   (z ~ N(0, I); nothing added after the last level)

with SVD's v-prediction EDM scalings (sigma_data = 1): c_skip = 1 / (sigma^2 + 1), c_out = -sigma / sqrt(sigma^2
+ 1). The levels are a Karras (rho = 7) schedule from 700 down towards 0.002 over 40 points, of which `steps`
evenly spaced ones are used, as in the authors' scheduler (animatelcm_svd/animatelcm_scheduler.py). The
interface is the few calls the animate stage makes of a diffusers scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class _StepOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor  # the step's prediction of the clean latents (as diffusers' schedulers name it)


class AnimateLCMSampler:
    """Multistep consistency sampling over SVD's EDM noise levels (see the module docstring)."""

    max_steps = 8  # distilled for 1-8 steps; 4 is the authors' default

    def __init__(self, sigma_min=0.002, sigma_max=700.0, sigma_data=1.0, rho=7.0, levels=40):
        self.sigma_min, self.sigma_max, self.sigma_data, self.rho, self.levels = (
            sigma_min, sigma_max, sigma_data, rho, levels,
        )  # fmt: skip
        self.init_noise_sigma = (sigma_max**2 + 1) ** 0.5
        self.sigmas = torch.empty(0)
        self.timesteps = torch.empty(0)
        self._index = 0

    def set_timesteps(self, steps: int, device=None) -> None:
        if not 1 <= steps <= self.levels:
            raise ValueError(f"steps must be 1..{self.levels}")
        stride = self.levels // steps
        ramp = torch.arange(steps, dtype=torch.float64) * stride / (self.levels - 1)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        sigmas = (hi + ramp * (lo - hi)) ** self.rho
        self.sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).to(torch.float32)
        self.timesteps = (0.25 * torch.log(sigmas)).to(device=device, dtype=torch.float32)
        self._index = 0

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        sigma = float(self.sigmas[self._index])
        return sample / (sigma**2 + self.sigma_data**2) ** 0.5

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None) -> _StepOutput:
        from diffusers.utils.torch_utils import randn_tensor

        sigma, following = float(self.sigmas[self._index]), float(self.sigmas[self._index + 1])
        scale = sigma**2 + self.sigma_data**2
        c_skip = self.sigma_data**2 / scale
        c_out = -sigma * self.sigma_data / scale**0.5
        denoised = c_out * model_output + c_skip * sample
        following_sample = denoised
        if following > 0:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            following_sample = denoised + following * noise
        self._index += 1
        return _StepOutput(prev_sample=following_sample, pred_original_sample=denoised)
