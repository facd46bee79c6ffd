"""The memory plan of a run: the profile the user named, or the automatic choice for the actual job.

Kept apart from the savers: the choice simulates the generation (simulate.py runs the animate stage on fake
tensors), so it sits above both (in planning/).
"""

from __future__ import annotations

from dataclasses import replace

# Modules, not their functions: each reading (free device memory, available RAM) and the simulation is looked up
# at call time, so it has one place (and a test can stand in for the machine).
from .. import memory as engine
from ..errors import first_line
from ..memory import choose_profile, job_shape, plan_for, ram
from ..memory.profiles import MemoryPlan
from . import simulate


def choose_plan(
    model,
    memory: str,
    overrides: dict,
    shape: tuple[int, int, int],
    cache: int = 1,
    tiny_decoder: bool = False,
    weights: str = "full",
) -> MemoryPlan:
    """The plan for a run: the profile asked for, or auto's pick for (frames, width, height), the feature cache's
    interval, whether a tiny decoder replaces the VAE's and how the UNet's weights are stored."""
    if memory != "auto":
        return replace(plan_for(memory, **overrides), reason="chosen by the memory setting")
    frames, width, height = shape
    free = engine.free_device_memory(model.device)
    if free is None:  # no device memory of its own (CPU, MPS): the RAM is the limit (ram.py)
        return ram.choose_profile_in_ram(ram.available_ram(), job_shape(model, frames, width, height), overrides)[0]
    # Simulated peaks (planning/simulate.py, cached on disk); the analytic estimate only if that fails.
    try:
        return simulate.simulated_choice(model, free, frames, width, height, overrides, cache, tiny_decoder, weights)
    except Exception as exc:  # any failure of the simulation falls back to the estimate
        failure = f"{type(exc).__name__}: {first_line(exc)}"
    plan, _ = choose_profile(free, job_shape(model, frames, width, height), overrides)
    return replace(plan, reason=f"{plan.reason}; analytic estimate, the simulation failed ({failure})")
