"""The library's per-step callback (`on_step=`), diffusers' `callback_on_step_end` in svd's words."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import Step, StepHook

if TYPE_CHECKING:
    import torch

# fn(step, steps, latents): step 1..steps, the latents after that step (on the device). What it raises stops the
# video and reaches the caller unchanged.
StepCallback = Callable[[int, int, "torch.Tensor"], object]


class OnStep(StepHook):
    def __init__(self, callback: StepCallback):
        self.callback = callback

    def after(self, step: Step) -> None:
        self.callback(step.number, step.count, step.latents)
