"""The automatic memory choice where the model computes in the computer's RAM: the CPU (and Apple's unified
memory, MPS).

There is no device memory to read there, but RAM runs out just the same, and then the machine swaps to a
halt or the process is killed. The choice works like the GPU's (profiles.py): the same peak estimate per
profile, compared with what the OS says is available (psutil), the fastest profile that fits, else a clear
refusal before the first step. Two differences: every weight stays in RAM whatever the profile (offloading
moves nothing off the CPU), and the model is already loaded when the choice is made, so its weights are
no longer part of the need.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import OutOfMemoryError, ref
from .profiles import PROFILE_ORDER, SAFETY_MARGIN, JobShape, MemoryPlan, estimate_peak_bytes, gib, plan_for

RAM_RESERVE_BYTES = 2**30  # the OS, this Python process's own overhead, ffmpeg


class NotEnoughMemoryError(OutOfMemoryError):
    """The video cannot fit in the available RAM even with the leanest profile: refused before any work."""


def available_ram() -> int:
    """Bytes the OS can give this process without swapping."""
    import psutil

    return psutil.virtual_memory().available


def ram_estimates(job: JobShape, overrides: dict | None = None, *, loaded: bool = True) -> list[tuple[str, int]]:
    """(profile, bytes of RAM the video still needs) per profile; `loaded`: the weights are already in RAM."""
    weights = job.unet_bytes + job.image_encoder_bytes + job.vae_bytes
    out = []
    for name in PROFILE_ORDER:
        plan = replace(plan_for(name, **(overrides or {})), offload="none")  # on the CPU every weight stays put
        out.append((name, estimate_peak_bytes(plan, job) - (weights if loaded else 0)))
    return out


def choose_profile_in_ram(
    available: int, job: JobShape, overrides: dict | None = None, *, loaded: bool = True
) -> tuple[MemoryPlan, list[tuple[str, int]]]:
    """The fastest profile whose estimated need (x margin, + reserve) fits in `available` RAM, or a refusal."""
    estimates = ram_estimates(job, overrides, loaded=loaded)
    budget = available - RAM_RESERVE_BYTES
    for name, need in estimates:
        if need * SAFETY_MARGIN <= budget:
            reason = f"{gib(available)} of RAM available; {name} needs about {gib(need)} (estimate, +20% margin)"
            return replace(plan_for(name, **(overrides or {})), reason=reason), estimates
    need = estimates[-1][1]
    raise NotEnoughMemoryError(
        f"This video needs about {gib(need * SAFETY_MARGIN + RAM_RESERVE_BYTES)} of RAM even with {ref('memory')} "
        f"min, but only {gib(available)} is available; use a smaller {ref('size')} or fewer {ref('frames')}, or "
        "close other programs.",
        available=available,
        needed=need,
        estimates=estimates,
    )
