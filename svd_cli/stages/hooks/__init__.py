"""Step hooks: what runs on every denoising step beside the model (base.py), and the one list of them.

A per-step feature is one module here and one line in `step_hooks`, which fixes the order they run in: the
finite check first (nothing after it sees NaN latents), then progress, then the caller's callback.
"""

from __future__ import annotations

import torch

from ...progress import Progress
from .base import Denoiser, Step, StepHook, StepHooks
from .callback import OnStep, StepCallback
from .finite import FiniteCheck, NonFiniteValues, finite
from .progress import ReportProgress

__all__ = ["Denoiser", "NonFiniteValues", "Step", "StepCallback", "StepHook", "StepHooks", "finite", "step_hooks"]


def step_hooks(*, dtype: torch.dtype, progress: Progress, on_step: StepCallback | None = None) -> StepHooks:
    """The hooks of one video, in the order they run; `dtype` is the denoiser's."""
    hooks: list[StepHook] = [FiniteCheck(dtype), ReportProgress(progress)]
    if on_step is not None:
        hooks.append(OnStep(on_step))
    return StepHooks(hooks)
