"""What a model folder in diffusers layout must hold, checked without loading anything or touching the network.

Each kind of model has its own weight components: SVD's UNet, VAE and CLIP image encoder; a text-to-image
model's UNet, VAE and CLIP text encoder(s) with their tokenizers. Downloads fetch exactly these (configs,
tokenizer files, one safetensors file per component) and nothing else: no pickles, no single-file copies.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelUnavailableError, UsageError, ref

# Per kind: component folder -> file stem of its weights. A "*" in a folder is a glob for the download
# (SDXL has text_encoder and text_encoder_2); the folders a model really has come from its model_index.json.
KIND_COMPONENTS = {
    "svd": {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "image_encoder": "model"},
    "text-to-image": {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder*": "model"},
}
WEIGHT_COMPONENTS = KIND_COMPONENTS["svd"]
CONFIG_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "*/preprocessor_config.json"]
# Tokenizers are small text files (vocab.json, merges.txt, tokenizer.json, their configs).
KIND_EXTRA_PATTERNS = {"svd": [], "text-to-image": ["tokenizer*/*.json", "tokenizer*/*.txt"]}
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def _suffix(variant: str | None) -> str:
    return f".{variant}.safetensors" if variant else ".safetensors"


def allow_patterns(variant: str | None, kind: str = "svd") -> list[str]:
    """The files svd downloads: configs, tokenizer files and one safetensors file per component."""
    weights = [f"{folder}/{stem}{_suffix(variant)}" for folder, stem in KIND_COMPONENTS[kind].items()]
    return CONFIG_PATTERNS + KIND_EXTRA_PATTERNS[kind] + weights


def weight_components(folder: Path | None, kind: str = "svd") -> dict[str, str]:
    """The component folders whose weights a model of `kind` in `folder` needs (globs expanded by its index)."""
    components = {}
    listed: set[str] = set()
    if folder is not None:
        try:
            index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
            listed = {k for k, v in index.items() if isinstance(v, list) and v[0] is not None}
        except (OSError, ValueError, AttributeError):
            listed = set()
    for name, stem in KIND_COMPONENTS[kind].items():
        if name.endswith("*"):
            matches = sorted(k for k in listed if k.startswith(name[:-1])) or [name[:-1]]
            components.update({m: stem for m in matches})
        else:
            components[name] = stem
    return components


def detect_variant(folder: Path, kind: str = "svd") -> str | None:
    """'fp16' when every component has an fp16 safetensors file, else None (plain safetensors)."""
    components = weight_components(folder, kind)
    if all((folder / f / f"{stem}.fp16.safetensors").is_file() for f, stem in components.items()):
        return "fp16"
    return None


def is_complete(folder: Path, variant: str | None, kind: str = "svd") -> bool:
    if not (folder / "model_index.json").is_file():
        return False
    components = weight_components(folder, kind)
    return all((folder / f / f"{stem}{_suffix(variant)}").is_file() for f, stem in components.items())


def check_model_folder(folder: Path, variant: str | None = None, kind: str = "svd") -> None:
    """Refuse a folder that is not a complete pipeline of `kind` in diffusers layout, or that holds only pickles."""
    from .kinds import KIND_DEFAULTS

    option = KIND_DEFAULTS[kind]["option"]
    if not (folder / "model_index.json").is_file():
        raise UsageError(
            f"{ref(option)} {folder}: no model_index.json there; point it at a diffusers-layout folder "
            "(as saved by a diffusers pipeline's save_pretrained) or use a model name.",
            option=option,
            path=folder,
        )
    for component, stem in weight_components(folder, kind).items():
        sub = folder / component
        wanted = sub / f"{stem}{_suffix(variant)}"
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
