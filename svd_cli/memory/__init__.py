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
    "choose_plan",
    "free_device_memory",
    "job_shape",
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


def choose_plan(model, memory: str, overrides: dict, shape: tuple[int, int, int]) -> MemoryPlan:
    """The plan for a run: the profile named by --memory, or auto's pick for (frames, width, height)."""
    from dataclasses import replace

    if memory != "auto":
        return replace(plan_for(memory, **overrides), reason="chosen with --memory")
    frames, width, height = shape
    free = free_device_memory(model.device)
    if free is not None:
        # Simulated peaks (memory/simulate.py, cached on disk); the analytic estimate only if that fails.
        try:
            from .simulate import simulated_choice

            return simulated_choice(model, free, frames, width, height, overrides)
        except Exception as exc:  # noqa: BLE001 - any failure of the simulation falls back to the estimate
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    plan, _ = choose_profile(free, job_shape(model, frames, width, height), overrides)
    if free is not None:
        plan = replace(plan, reason=f"{plan.reason}; analytic estimate, the simulation failed ({failure})")
    return plan


def job_shape(model, frames: int, width: int, height: int) -> JobShape:
    """The sizes the memory estimate needs, read off a loaded model."""
    pipe = model.pipe

    def nbytes(module) -> int:
        return sum(p.numel() * p.element_size() for p in module.parameters())

    return JobShape(
        unet_bytes=nbytes(pipe.unet),
        image_encoder_bytes=nbytes(pipe.image_encoder),
        vae_bytes=nbytes(pipe.vae),
        unet_base_channels=pipe.unet.config.block_out_channels[0],
        vae_base_channels=pipe.vae.config.block_out_channels[0],
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
