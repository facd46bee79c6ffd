"""The memory plan of a run: the profile the user named, or the automatic choice for the actual job.

Kept apart from the savers: the choice simulates the generation (simulate.py runs the animate stage on fake
tensors), so it sits above both (in planning/).
"""

from __future__ import annotations

from dataclasses import replace

from .. import memory as engine  # looked up at call time, so the free-memory reading has one place
from ..errors import first_line
from ..memory import choose_profile, job_shape, plan_for
from ..memory.profiles import MemoryPlan
from ..memory.ram import available_ram, choose_profile_in_ram
from .simulate import simulated_choice


def choose_plan(model, memory: str, overrides: dict, shape: tuple[int, int, int]) -> MemoryPlan:
    """The plan for a run: the profile asked for, or auto's pick for (frames, width, height)."""
    if memory != "auto":
        return replace(plan_for(memory, **overrides), reason="chosen by the memory setting")
    frames, width, height = shape
    free = engine.free_device_memory(model.device)
    if free is None:  # no device memory of its own (CPU, MPS): the RAM is the limit (ram.py)
        return choose_profile_in_ram(available_ram(), job_shape(model, frames, width, height), overrides)[0]
    # Simulated peaks (planning/simulate.py, cached on disk); the analytic estimate only if that fails.
    try:
        return simulated_choice(model, free, frames, width, height, overrides)
    except Exception as exc:  # any failure of the simulation falls back to the estimate
        failure = f"{type(exc).__name__}: {first_line(exc)}"
    plan, _ = choose_profile(free, job_shape(model, frames, width, height), overrides)
    return replace(plan, reason=f"{plan.reason}; analytic estimate, the simulation failed ({failure})")
