"""Loading an SVD pipeline from a local diffusers-layout folder, the same way for every model.

The real checkpoints and the built-in tiny model both come through `load_model`, so the tests that run the
tiny model exercise the loading code users run. Only safetensors are read (`use_safetensors=True`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ModelLoadError, UsageError
from .hub import ModelSource, check_model_folder

if TYPE_CHECKING:
    import torch
    from diffusers import StableVideoDiffusionPipeline

DTYPES = ("auto", "fp16", "bf16", "fp32")
DEVICES = ("auto", "cuda", "cpu", "mps")


@dataclass
class LoadedModel:
    """A pipeline's components, on the CPU until a memory plan places them on the device."""

    source: ModelSource
    pipe: StableVideoDiffusionPipeline
    device: torch.device
    dtype: torch.dtype


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence library chatter that means nothing to users: progress bars, the torchvision fallback notice
    (transformers prints it when diffusers first imports CLIPImageProcessor), deprecation warnings."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    old_t, old_d = tlog.get_verbosity(), dlog.get_verbosity()
    tlog.set_verbosity_error()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    root = logging.getLogger("transformers")
    old_level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        tlog.set_verbosity(old_t)
        dlog.set_verbosity(old_d)
        root.setLevel(old_level)


def resolve_device(name: str) -> torch.device:
    import torch

    if name not in DEVICES:
        raise UsageError(f"--device {name}: choose one of {', '.join(DEVICES)}.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device cuda: PyTorch {torch.__version__} sees no CUDA GPU; install a CUDA build of torch "
            "(see pytorch.org) and an Nvidia driver, or use --device cpu."
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: this PyTorch has no Apple-silicon (MPS) support; use --device cpu.")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp16 on GPUs (the checkpoints are fp16), fp32 on the CPU where half precision is slow and lossy."""
    import torch

    if name not in DTYPES:
        raise UsageError(f"--dtype {name}: choose one of {', '.join(DTYPES)}.")
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def dtype_name(dtype: torch.dtype) -> str:
    import torch

    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]


def load_model(source: ModelSource, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Read the pipeline's five components from `source.path` (safetensors only) onto the CPU."""
    check_model_folder(source.path, source.variant)
    try:
        with quiet_transformers():
            from diffusers import StableVideoDiffusionPipeline

            pipe = StableVideoDiffusionPipeline.from_pretrained(
                source.path,
                torch_dtype=dtype,
                variant=source.variant,
                use_safetensors=True,
                local_files_only=True,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"Could not load the model in {source.path} ({type(exc).__name__}: {_first_line(exc)}); "
            f"if it was downloaded, run `svd weights pull {source.name}` to repair it."
        ) from exc
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        module.eval().requires_grad_(False)
    return LoadedModel(source=source, pipe=pipe, device=device, dtype=dtype)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no details"
