"""Step hooks: what runs on every denoising step beside the model (base.py), and the one list of them.

A per-step feature is one module here and one line in `step_hooks`, which fixes the order they run in: the
feature cache first (it decides what each denoiser call computes), the finite check (nothing after it sees NaN
latents), the bidirectional step of end (it makes the update), the mask blend (what follows sees the blended
latents), then progress, the live preview, the caller's callback, and last the keeper of the final latents (it
keeps what the decoder gets).
"""

from __future__ import annotations

import torch

from ...progress import Progress
from .base import Denoiser, Step, StepHook, StepHooks
from .cache import FeatureCache
from .callback import OnStep, StepCallback
from .ends import BothEnds
from .finite import FiniteCheck, NonFiniteValues, finite
from .latents import KeepLatents
from .mask import MaskBlend
from .preview import LivePreview
from .progress import ReportProgress

__all__ = ["BothEnds", "Denoiser", "KeepLatents", "LivePreview", "MaskBlend", "NonFiniteValues", "Step", "StepCallback",
           "StepHook", "StepHooks", "finite", "step_hooks"]  # fmt: skip


def step_hooks(
    *,
    dtype: torch.dtype,
    progress: Progress,
    on_step: StepCallback | None = None,
    cache: int = 1,
    preview: LivePreview | None = None,
    keep: KeepLatents | None = None,
    mask: MaskBlend | None = None,
    ends: BothEnds | None = None,
) -> StepHooks:
    """The hooks of one video, in the order they run; `dtype` is the denoiser's, `cache` the feature cache's
    interval (1: no cache), `preview` the run's live preview, `keep` the keeper of its final latents and `mask`
    the cinemagraph's blend, `ends` the bidirectional step of an end picture (None: none)."""
    hooks: list[StepHook] = [FeatureCache(cache)] if cache > 1 else []
    hooks.append(FiniteCheck(dtype))
    if ends is not None:
        hooks.append(ends)
    if mask is not None:
        hooks.append(mask)
    hooks.append(ReportProgress(progress))
    if preview is not None:
        hooks.append(preview)
    if on_step is not None:
        hooks.append(OnStep(on_step))
    if keep is not None:
        hooks.append(keep)
    return StepHooks(hooks)
