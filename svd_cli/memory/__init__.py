"""The memory engine: savers that make SVD fit consumer cards, profiles that combine them, the auto choice.

Each saver is one module: attention slicing (attention.py), feed-forward chunking (feedforward.py), weight
placement / offload (placement.py), seam-free VAE tiling (vae_tiling.py); CFG split and decode chunking are
steps of the generation loop (svd_cli/pipeline.py). `apply_plan` switches a loaded model to a plan.
"""

from __future__ import annotations

from .profiles import (
    MEMORY_CHOICES,
    PROFILE_ORDER,
    PROFILES,
    JobShape,
    MemoryPlan,
    choose_profile,
    estimate_peak_bytes,
    gib,
    plan_for,
    step_down,
)

__all__ = [
    "MEMORY_CHOICES",
    "PROFILE_ORDER",
    "PROFILES",
    "JobShape",
    "MemoryPlan",
    "apply_plan",
    "choose_profile",
    "estimate_peak_bytes",
    "gib",
    "plan_for",
    "step_down",
]


def apply_plan(model, plan: MemoryPlan):
    """Configure `model` (a LoadedModel) for `plan`; returns the Placement that moves its weights."""
    from .attention import resolve_attention, set_attention
    from .feedforward import set_feed_forward_chunking
    from .placement import Placement
    from .vae_tiling import install_shared_stats_norms

    pipe = model.pipe
    install_shared_stats_norms(pipe.vae)  # before offload hooks wrap the norms' forward
    attention = resolve_attention(plan.attention, model.device, plan.slice_attention)
    set_attention([pipe.unet, pipe.vae], attention, plan.attention_slice_scores)
    set_feed_forward_chunking(pipe.unet, plan.ff_chunk_tokens)
    placement = Placement.for_pipeline(pipe, model.device, plan.offload)
    placement.apply()
    placement.attention = attention
    return placement
