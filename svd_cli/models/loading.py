"""Loading a model folder into its adapter, the same way for every model; choosing device and dtype.

The real checkpoints and the built-in tiny model both come through `load_model`, so the tests that run the
tiny model exercise the loading code users run. Only safetensors are read (`use_safetensors=True`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError, OptionError, first_line
from ..families import FAMILIES
from ..install import check_install
from ..options import DTYPES
from .adapters import ADAPTERS
from .architectures import ARCHITECTURES
from .layout import check_model_folder, damaged_files
from .lora import apply_loras, load_unet
from .quiet import quiet_transformers
from .single_file import load_single_file

if TYPE_CHECKING:
    import torch

    from .sources import ModelSource

DEVICES = ("auto", "cuda", "cpu", "mps")


def resolve_device(name: str) -> torch.device:
    import torch

    if name not in DEVICES:
        raise OptionError("device", name, f"choose one of {', '.join(DEVICES)}.", allowed=DEVICES)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError(
            "device", name,
            f"PyTorch {torch.__version__} sees no CUDA GPU; install a CUDA build of torch (see pytorch.org) and an "
            "Nvidia driver, or use the CPU.",
        )  # fmt: skip
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OptionError("device", name, "this PyTorch has no Apple-silicon (MPS) support; use the CPU.")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp16 on GPUs (the checkpoints are fp16), fp32 on the CPU where half precision is slow and lossy."""
    import torch

    if name not in DTYPES:
        raise OptionError("dtype", name, f"choose one of {', '.join(DTYPES)}.", allowed=DTYPES)
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return _torch_dtypes()[name]


def dtype_name(dtype: torch.dtype) -> str:
    """The name `dtype` has among DTYPES ("fp16"), or torch's own name for a dtype svd does not offer."""
    return next((name for name, known in _torch_dtypes().items() if known == dtype), str(dtype))


def _torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def load_model(
    source: ModelSource,
    device: torch.device,
    dtype: torch.dtype,
    unet: Path | None = None,
    loras: list[tuple[Path, float]] | None = None,
) -> Any:
    """Read the model's components from `source.path` (safetensors only) onto the CPU, behind its adapter.

    A family's folder loads as the pipeline class its family names (SVD: `StableVideoDiffusionPipeline`),
    text-to-image folders with diffusers' `AutoPipelineForText2Image` (whichever pipeline their
    model_index.json names); a single-file SVD checkpoint is converted while loading. `unet` (or the registry
    entry's own UNet, e.g. AnimateLCM's) replaces the model's UNet, which is then not read at all; `loras` are
    applied to the UNet last.
    """

    check_install()  # a broken torch/torchvision pair is named as such, not blamed on the model's files
    unet = unet or source.unet
    replacement = None
    if unet is not None:
        with quiet_transformers():
            replacement = load_unet(unet, base_unet_config(source), dtype)
    if source.is_file:
        with quiet_transformers():
            pipe = load_single_file(source.path, source.single_file["arch"], dtype, unet=replacement)
        return _finish(_adapter(source, pipe, device, dtype), loras, dtype)
    check_model_folder(source.path, source.variant, source.kind, source.family)
    for path, problem in damaged_files(source.path, source.variant, source.kind, source.family):
        raise ModelLoadError(f"{path} {problem}; {source.repair_advice()}.", path=path)
    try:
        with quiet_transformers():
            loader = FAMILIES[source.family].pipeline_class() if source.family else _text_to_image_loader()
            extra = {"safety_checker": None} if _lists(source.path, "safety_checker") else {}
            if replacement is not None:
                extra["unet"] = replacement
            pipe = loader.from_pretrained(
                source.path,
                torch_dtype=dtype,
                variant=source.variant,
                use_safetensors=True,
                local_files_only=True,
                **extra,
            )
            adapter = _adapter(source, pipe, device, dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"Could not load the model in {source.path} ({type(exc).__name__}: {first_line(exc, 'no details')[:200]}); "
            f"{source.repair_advice()}.",
            path=source.path,
        ) from exc
    encoders = (getattr(pipe, name, None) for name in ("image_encoder", "text_encoder", "text_encoder_2"))
    for module in (pipe.unet, pipe.vae, *(m for m in encoders if m is not None)):
        module.eval().requires_grad_(False)
    return _finish(adapter, loras, dtype)


def _adapter(source: ModelSource, pipe, device: torch.device, dtype: torch.dtype):
    """The loaded pipeline behind its family's adapter (or its kind's)."""
    if source.family is not None:
        return FAMILIES[source.family].adapter(source, pipe, device, dtype)
    return ADAPTERS[source.kind](source, pipe, device, dtype)


def _lists(folder, component: str) -> bool:
    """Whether the pipeline in `folder` has `component` (SD 1.x's safety checker, which svd does not download)."""
    import json

    try:
        return component in json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _finish(model, loras, dtype):
    if loras:
        apply_loras(model.unet, loras, dtype)
    return model


def base_unet_config(source: ModelSource) -> dict:
    """The UNet config of the model a replacement UNet goes into."""
    if source.is_file:
        return dict(ARCHITECTURES[source.single_file["arch"]][0])
    import json

    config = json.loads((source.path / "unet" / "config.json").read_text(encoding="utf-8"))
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _text_to_image_loader() -> type:
    """diffusers' auto pipeline for a text-to-image folder, imported only for one: it imports every pipeline
    diffusers has (about 1.5 s), which a video model's own pipeline class does not need."""
    from diffusers import AutoPipelineForText2Image

    return AutoPipelineForText2Image
