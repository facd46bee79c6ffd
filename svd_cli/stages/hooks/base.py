"""What a step hook is: code that runs on every denoising step beside the model, in a set order.

`VideoModel.__call__` gives the denoiser module to every hook's `module` once (a hook may hand back a wrapper the
family's denoiser call then calls instead), then runs, for each step: every hook's `before`; the denoiser,
wrapped by every hook's `around` (the first hook outermost); the scheduler's update; every hook's `after`. A
hook reads the `Step` and may replace its `latents` (a mask blend does). The memory simulation runs the same
loop on fake tensors, so a hook that makes a step cheaper (a feature cache's reuse step) or dearer is counted as
it runs. One hook may make the step's update itself in place of the denoiser call and the scheduler's update
(`update`: sampling from both ends does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# The denoiser of one step: scaled latents and timestep in, the guided noise prediction out.
Denoiser = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass
class Step:
    """Where the loop is: step `number` (1-based) of `count`, at `timestep`. `latents` are the step's input in
    `before` and `around`, and the scheduler's output in `after`; `denoised` is then the step's prediction of the
    clean latents (what the video would be if it stopped here)."""

    number: int
    count: int
    timestep: torch.Tensor
    latents: torch.Tensor
    denoised: torch.Tensor | None = None


class StepHook:
    """One per-step behaviour; each method does nothing unless a hook overrides it."""

    def start(self, steps: int) -> None:
        """Before the first step of a video (`steps` steps to come)."""

    def module(self, denoiser: Any) -> Any:
        """The denoiser module the video's steps call (once, before the first step): `denoiser` itself, or an
        object called with the same arguments (a feature cache's, which runs part of it on some steps)."""
        return denoiser

    def before(self, step: Step) -> None:
        """Before the step's denoiser call."""

    def around(self, step: Step, denoise: Denoiser) -> Denoiser:
        """The denoiser this step calls: `denoise` itself, or a function that calls it (or skips it)."""
        return denoise

    def update(self, step: Step) -> bool:
        """Make the step's update itself (set `step.latents`, and `step.denoised`) and return True; or return False
        to leave it to the denoiser call and the scheduler."""
        return False

    def after(self, step: Step) -> None:
        """After the scheduler's update; `step.latents` are the next step's input."""

    def end(self) -> None:
        """After the last step (not when a step raised)."""


class StepHooks:
    """The hooks of one video, run in their list's order (the order is chosen once, in `step_hooks`)."""

    def __init__(self, hooks: Sequence[StepHook]):
        self.hooks = tuple(hooks)

    def start(self, steps: int) -> None:
        for hook in self.hooks:
            hook.start(steps)

    def module(self, denoiser: Any) -> Any:
        for hook in reversed(self.hooks):
            denoiser = hook.module(denoiser)
        return denoiser

    def before(self, step: Step) -> None:
        for hook in self.hooks:
            hook.before(step)

    def around(self, step: Step, denoise: Denoiser) -> Denoiser:
        for hook in reversed(self.hooks):  # wrapped inside out: the first hook's wrapper is called first
            denoise = hook.around(step, denoise)
        return denoise

    def update(self, step: Step) -> bool:
        return any(hook.update(step) for hook in self.hooks)  # the first that makes it, alone

    def after(self, step: Step) -> None:
        for hook in self.hooks:
            hook.after(step)

    def end(self) -> None:
        for hook in self.hooks:
            hook.end()
