"""Keeping a video's final latents (keep_latents): the latents after the last step, which the decoder gets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Step, StepHook

if TYPE_CHECKING:
    import torch


class KeepLatents(StepHook):
    """Holds the scheduler's output of the last step (on the CPU) once the loop ends; it runs after every other
    hook, so it keeps what the decoder is given."""

    def __init__(self) -> None:
        self.latents: torch.Tensor | None = None

    def after(self, step: Step) -> None:
        if step.number == step.count:
            self.latents = step.latents.detach().cpu().clone()
