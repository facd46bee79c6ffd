"""The NaN guard's per-step check: non-finite latents stop the video at the step that made them."""

from __future__ import annotations

import torch

from ...errors import NonFiniteError
from ...models.loading import dtype_name
from .base import Step, StepHook


class NonFiniteValues(Exception):
    """NaN or inf appeared in the latents (after a denoising step) or in the decoded frames."""

    def __init__(self, stage: str, step: int | None, steps: int | None, dtype: torch.dtype):
        super().__init__(stage)
        self.stage, self.step, self.steps, self.dtype = stage, step, steps, dtype

    def error(self) -> NonFiniteError:
        where = f" (step {self.step} of {self.steps})" if self.step else ""
        return NonFiniteError(
            f"the model produced NaN or infinite values while {self.stage}{where} in {dtype_name(self.dtype)}, so no "
            "video was written; its weights may be damaged: check them with `svd weights verify`.",
            stage=self.stage,
            step=self.step,
        )


def finite(tensor: torch.Tensor) -> bool:
    """Whether every value of `tensor` is finite, from one float32 reduction (one number to the host).

    A tensor on the meta device has no values (the memory simulation runs this code on fake tensors): it
    passes, after the same reduction a real run computes, so the simulation still counts it.
    """
    total = tensor.sum(dtype=torch.float32)
    return tensor.device.type == "meta" or bool(torch.isfinite(total))


class FiniteCheck(StepHook):
    """After every step, one reduction (cheap): NaN or inf anywhere in the latents makes the sum non-finite, and
    the video stops there, so `VideoModel.make_frames` can redo it in a wider dtype."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype  # the denoiser's, named in the error

    def after(self, step: Step) -> None:
        if not finite(step.latents):
            raise NonFiniteValues("denoising", step.number, step.count, self.dtype)
