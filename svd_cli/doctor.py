"""`svd doctor`: what this machine offers svd, and what the automatic memory choice would pick here."""

from __future__ import annotations

import os
import platform
import sys

from ._version import __version__
from .errors import SvdError
from .install import install_problems
from .memory import PROFILE_ORDER, JobShape, choose_profile, plan_for
from .memory.ram import choose_profile_in_ram
from .models.architectures import parameter_bytes
from .models.hub import offline_mode
from .models.sources import weights_status
from .planning.simulate import Job, MissingSimulation, architecture_for, cached_simulation, pick_simulated
from .registry import get_entry


def collect() -> dict:
    """Everything doctor reports, as plain data (works on machines with no GPU). With a package that does not
    import, only that (`install_problems`): the rest of the report needs it."""
    problems = install_problems()
    if problems:
        return {"svd": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
                "install_problems": problems}  # fmt: skip
    import psutil
    import torch

    report: dict = {
        "svd": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "gpus": [],
        "attention": {},
    }
    try:
        import diffusers

        report["diffusers"] = diffusers.__version__
    except Exception as exc:  # pragma: no cover - doctor must report, not crash
        report["diffusers"] = f"not importable: {exc}"

    free = None
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free_i, total_i = torch.cuda.mem_get_info(i)
            report["gpus"].append(
                {
                    "index": i,
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "free_bytes": free_i,
                    "total_bytes": total_i,
                }
            )
            if i == 0:
                free = free_i
        major = torch.cuda.get_device_properties(0).major
        report["attention"] = {
            "sdpa_flash": bool(torch.backends.cuda.flash_sdp_enabled() and major >= 8),
            "sdpa_memory_efficient": bool(torch.backends.cuda.mem_efficient_sdp_enabled()),
        }
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        report["gpus"].append({"index": 0, "name": "Apple MPS", "free_bytes": None, "total_bytes": None})
        report["attention"] = {"sdpa_flash": False, "sdpa_memory_efficient": False}
    else:
        report["attention"] = {"sdpa_cpu_flash": True}
    from .memory.attention import xformers_available

    report["attention"]["xformers"] = _xformers_version() if xformers_available() else None
    report["device"] = "cuda" if torch.cuda.is_available() else ("mps" if report["gpus"] else "cpu")
    memory = psutil.virtual_memory()
    report["ram"] = {"total_bytes": memory.total, "available_bytes": memory.available}
    on_gpu = report["device"] == "cuda"
    report["auto_profiles"] = _auto_profiles(free) if on_gpu else _auto_profiles_in_ram(memory.available)
    report["simulated"] = _simulated_table()
    report["ffmpeg"] = _ffmpeg()
    report["weights"] = weights_status()
    report["hub"] = {
        "cache": os.environ.get("HF_HOME") or "~/.cache/huggingface",
        "offline": offline_mode(),
        "token": _has_token(),
    }
    return report


def _auto_profiles_in_ram(available: int) -> dict:
    """What the automatic memory choice picks on this CPU (fp32, the weights counted too) for a 1024x576 video."""

    out = {}
    sizes = parameter_bytes("svd-xt", 4)
    for name in ("svd", "svd-xt"):
        job = _job(sizes, get_entry(name).frames, dtype_bytes=4)
        try:
            plan, estimates = choose_profile_in_ram(available, job, loaded=False)
            profile, reason = plan.profile, plan.reason
        except SvdError as exc:
            profile, reason, estimates = "none", exc.marked(), exc.fields.get("estimates", [])
        out[name] = {"profile": profile, "reason": reason, "estimated_peak_bytes": dict(estimates)}
    return out


def _job(sizes: dict, frames: int, dtype_bytes: int):

    return JobShape(
        unet_bytes=sizes["unet"],
        image_encoder_bytes=sizes["image_encoder"],
        vae_bytes=sizes["vae"],
        unet_base_channels=320,
        vae_base_channels=128,
        frames=frames,
        width=1024,
        height=576,
        dtype_bytes=dtype_bytes,
    )


def _xformers_version() -> str:
    import xformers

    return xformers.__version__


def _auto_profiles(free: int | None) -> dict:
    """What `--memory auto` picks on this GPU for each model's default 1024x576 fp16 video: the same function
    (planning/simulate.py pick_simulated) on the simulation cache; the analytic estimate where a profile is not
    simulated yet (`svd plan` fills the cache), said so in the reason."""

    out = {}
    sizes = parameter_bytes("svd-xt", 2)
    for name in ("svd", "svd-xt"):
        entry = get_entry(name)
        job = Job(frames=entry.frames, width=1024, height=576, dtype="fp16")
        try:
            plan = pick_simulated(architecture_for(name), job, free, {}, cached_simulation)
            out[name] = {"profile": plan.profile, "reason": plan.reason}
        except MissingSimulation as missing:
            plan, estimates = choose_profile(free, _job(sizes, entry.frames, dtype_bytes=2))
            reason = f"{plan.reason}; analytic estimate: {missing.args[0]} is not simulated yet (run `svd plan`)"
            out[name] = {"profile": plan.profile, "reason": reason, "estimated_peak_bytes": dict(estimates)}
    return out


def _simulated_table() -> dict:
    """Simulated peak and FLOPs of each profile for the default job (svd-xt, 25 frames, 1024x576, fp16), from
    the simulation cache: doctor stays quick, `svd plan` fills the cache (about 30 s of CPU, once)."""
    try:
        arch, job = architecture_for("svd-xt"), Job(frames=25, width=1024, height=576, dtype="fp16")
        rows = {}
        for name in PROFILE_ORDER:
            hit = cached_simulation(arch, plan_for(name), job)
            if hit is not None:
                rows[name] = {"peak_bytes": hit.peak_bytes, "tflops": round(hit.flops(25) / 1e12, 1)}
        return {
            "job": "svd-xt 25x1024x576 fp16, 25 steps",
            "rows": rows,
            "missing": [p for p in PROFILE_ORDER if p not in rows],
        }
    except Exception as exc:  # pragma: no cover - doctor must report, not crash
        return {"error": f"{type(exc).__name__}: {exc}"}


def _ffmpeg() -> dict:
    try:
        import imageio_ffmpeg

        return {"path": imageio_ffmpeg.get_ffmpeg_exe(), "version": imageio_ffmpeg.get_ffmpeg_version()}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:
        return False
