"""The memory engine: savers that make SVD fit consumer cards, profiles that combine them, the auto choice.

Each saver is one module: attention slicing (attention.py), feed-forward chunking (feedforward.py), weight
placement / offload (placement.py), seam-free VAE tiling (vae_tiling.py); CFG split and decode chunking are
steps of the generation loop (svd_cli/stages/animate.py). `apply_plan` switches a loaded model to a plan.
"""

from __future__ import annotations

from .profiles import (
    IMAGE_OFFLOAD,
    MEMORY_CHOICES,
    PROFILE_ORDER,
    PROFILES,
    JobShape,
    MemoryPlan,
    chain_peak_bytes,
    choose_profile,
    estimate_peak_bytes,
    fastest_fitting,
    gib,
    image_plan_for,
    image_plans,
    plan_for,
    step_down,
)

__all__ = [
    "IMAGE_OFFLOAD",
    "MEMORY_CHOICES",
    "chain_peak_bytes",
    "choose_image_plan",
    "fastest_fitting",
    "image_plan_for",
    "image_plans",
    "free_device_memory",
    "job_shape",
    "PROFILE_ORDER",
    "PROFILES",
    "JobShape",
    "MemoryPlan",
    "apply_plan",
    "choose_profile",
    "estimate_peak_bytes",
    "free_memory",
    "gib",
    "plan_for",
    "step_down",
]


def apply_plan(model, plan: MemoryPlan):
    """Configure `model` (a model adapter) for `plan`; returns the Placement that moves its weights."""
    from .attention import resolve_attention, set_attention
    from .feedforward import set_feed_forward_chunking
    from .placement import Placement
    from .vae_tiling import install_shared_stats_norms

    components = model.components()
    install_shared_stats_norms(components["decoder"])  # before offload hooks wrap the norms' forward
    install_shared_stats_norms(components["vae_encoder"])
    attention = resolve_attention(plan.attention, model.device, plan.slice_attention)
    set_attention(model.attention_modules(), attention, plan.attention_slice_scores)
    set_feed_forward_chunking(components["denoiser"], plan.ff_chunk_tokens)
    placement = Placement(components, model.device, plan.offload)
    placement.apply()
    placement.attention = attention
    return placement


def choose_image_plan(model, memory: str, width: int, height: int, guided: bool) -> MemoryPlan:
    """Where a text-to-image model's weights live while it draws a `width` x `height` still: the profile
    asked for, or auto's pick from the device's free memory at the time (SVD is not loaded then)."""
    from dataclasses import replace

    if memory != "auto":
        return replace(image_plan_for(memory), reason="chosen by the memory setting")
    job = replace(job_shape(model, 1, width, height), cfg=guided)
    plan, _ = fastest_fitting(free_device_memory(model.device), image_plans(), job)
    return plan


def job_shape(model, frames: int, width: int, height: int) -> JobShape:
    """The sizes the memory estimate needs, read off a loaded model's adapter (SVD or text-to-image)."""
    sizes = model.role_bytes()
    return JobShape(
        unet_bytes=sizes["denoiser"],
        image_encoder_bytes=sizes["encoder"],
        vae_bytes=sizes["autoencoder"],
        unet_base_channels=model.denoiser_base_channels,
        vae_base_channels=model.decoder_base_channels,
        frames=frames,
        width=width,
        height=height,
        dtype_bytes=model.dtype.itemsize,
    )


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device; None where there is no device memory to respect (CPU, MPS)."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    return None
