"""What a model folder in diffusers layout must hold, checked without loading anything or touching the network."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelUnavailableError, UsageError, ref

WEIGHT_COMPONENTS = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "image_encoder": "model",
}
CONFIG_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "*/preprocessor_config.json"]
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def allow_patterns(variant: str | None) -> list[str]:
    """The files svd downloads: configs and one safetensors file per component."""
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    return CONFIG_PATTERNS + [f"{folder}/{stem}{suffix}" for folder, stem in WEIGHT_COMPONENTS.items()]


def detect_variant(folder: Path) -> str | None:
    """'fp16' when every component has an fp16 safetensors file, else None (plain safetensors)."""
    if all((folder / f / f"{stem}.fp16.safetensors").is_file() for f, stem in WEIGHT_COMPONENTS.items()):
        return "fp16"
    return None


def is_complete(folder: Path, variant: str | None) -> bool:
    if not (folder / "model_index.json").is_file():
        return False
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    return all((folder / f / f"{stem}{suffix}").is_file() for f, stem in WEIGHT_COMPONENTS.items())


def check_model_folder(folder: Path, variant: str | None = None) -> None:
    """Refuse a folder that is not a complete SVD pipeline in diffusers layout, or that holds only pickles."""
    if not (folder / "model_index.json").is_file():
        raise UsageError(
            f"{ref('model')} {folder}: no model_index.json there; point it at a diffusers-layout folder "
            "(as saved by StableVideoDiffusionPipeline.save_pretrained) or use a model name.",
            option="model",
            path=folder,
        )
    for component, stem in WEIGHT_COMPONENTS.items():
        sub = folder / component
        wanted = sub / (f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors")
        if wanted.is_file() or any(sub.glob("*.safetensors")):
            continue
        pickles = [p.name for p in sub.glob("*") if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise ModelUnavailableError(
                f"{sub} has only pickle weights ({', '.join(sorted(pickles))}); svd loads safetensors only, "
                "because pickle files can run code: convert them with diffusers' save_pretrained(..., "
                "safe_serialization=True) first.",
                path=sub,
            )
        raise ModelUnavailableError(
            f"{sub} has no {wanted.name}; the download is incomplete: run `svd weights pull` for this "
            "model again (it fetches only what is missing).",
            path=sub,
        )
