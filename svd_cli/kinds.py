"""Model kinds: what a registry entry or a model folder is for, and the defaults each brings.

A kind is what a setting takes: a video model (`VIDEO`, of one of the families in families/: svd), a
text-to-image model, an upscaler, an interpolator, a tiny decoder or a background remover. A video model also has
a family, which decides its defaults, its files and its denoising; the other kinds have none. Importable without
torch: planning a batch (names, resume) needs the defaults long before any model is loaded. The adapter that builds
and runs a video model is its family's; the others' are in models/adapters.py.
"""

from __future__ import annotations

from pathlib import Path

from .families import FAMILIES, family_reading

VIDEO = "video"  # the kind of an image-to-video model (the `model` setting's), of any family in FAMILIES

# Per kind: the setting that names a model of it, what it is and where it may come from (for messages); and for
# the kinds with no family, its sampler, the built-in model that works offline and the default of every setting
# the model decides (a video model's come from its family).
KINDS: dict[str, dict] = {
    VIDEO: {"option": "model", "role": "an image-to-video model", "places": "a folder or a Hub repo id"},
    # A text-to-image model makes (or restyles) the first frame. Its defaults are those of its own settings:
    # steps and cfg (image_steps, image_cfg), and `size`, the size it draws a landscape still at before the
    # still is fitted to the video (None: at the video's size).
    "text-to-image": {
        "sampler": "the pipeline's own",
        "option": "image_model",
        "builtin": "tiny-t2i",
        "role": "a text-to-image model",
        "places": "a folder or a Hub repo id",
        "defaults": {"steps": 30, "cfg": 5.0, "size": None},
    },
    # A super-resolution network for the upscale post stage (models/upscaler.py): one safetensors file that
    # spandrel recognises, enlarging every frame `scale` times.
    "upscaler": {
        "sampler": "none",
        "option": "upscaler",
        "builtin": "tiny-upscaler",
        "role": "an upscaler",
        "places": "a .safetensors file",
        "defaults": {"scale": 2},
    },
    # A frame interpolator for the interpolate post stage (models/rife.py): one safetensors file of RIFE 4.13's
    # flow network. `methods` are the interpolators that need no file (ffmpeg's), also valid for its setting.
    "interpolator": {
        "sampler": "none",
        "option": "interpolator",
        "builtin": "tiny-rife",
        "role": "an interpolator",
        "places": "a .safetensors file",
        "methods": ("minterpolate",),
        "defaults": {},
    },
    # A tiny decoder in place of the video model's own VAE decoder (models/decoder.py): one safetensors file of
    # TAESD's decoder. Its method `full` is the model's own decoder.
    "decoder": {
        "sampler": "none",
        "option": "decoder",
        "builtin": "tiny-taesd",
        "role": "a tiny decoder",
        "places": "a .safetensors file",
        "methods": ("full",),
        "defaults": {},
    },
    # A background remover for remove_background (models/cutout.py): one ONNX file of U^2-Net's salient-object
    # network, run by rembg as Stability's SV3D script runs it.
    "background-remover": {
        "sampler": "none",
        "option": "background_remover",
        "builtin": "tiny-u2net",
        "role": "a background remover",
        "places": "an .onnx file",
        "suffix": ".onnx",
        "defaults": {},
    },
}
# The kinds whose models are one file (safetensors, unless the kind names another `suffix`) rather than a
# diffusers folder.
FILE_KINDS = ("upscaler", "interpolator", "decoder", "background-remover")
# The tiny decoder a draft (the draft option) decodes with, and a live preview beside the full VAE.
DRAFT_DECODER = "taesd"


def weights_suffix(kind: str) -> str:
    """The file suffix of a one-file model of `kind`: .safetensors, or the kind's own (.onnx)."""
    return KINDS[kind].get("suffix", ".safetensors")


def model_defaults(kind: str, family: str | None = None) -> dict:
    """A fresh copy (callers may change it) of the defaults of a model of `kind`: its family's for a video model."""
    return dict(FAMILIES[family].defaults if kind == VIDEO else KINDS[kind]["defaults"])


def builtin_model(kind: str) -> str:
    """The built-in model of `kind` that works offline (for a video model, the first family's that has one)."""
    if kind == VIDEO:
        return next(family.builtin for family in FAMILIES.values() if family.builtin)
    return KINDS[kind]["builtin"]


def folder_type(folder: Path) -> tuple[str, str | None] | None:
    """The kind and family of the pipeline a diffusers-layout folder holds (from model_index.json), None if
    unreadable.

    A pipeline class no family reads is taken for a text-to-image model (AutoPipelineForText2Image refuses
    what it cannot load).
    """
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    family = family_reading(name)
    return (VIDEO, family.name) if family is not None else ("text-to-image", None)


def folder_defaults(folder: Path, kind: str, family: str | None = None) -> dict:
    """Defaults for a model folder of `kind` svd has no registry entry for: its family's (with what the folder's
    configs say, such as the UNet's frame count), or its kind's."""
    if kind == VIDEO:
        return FAMILIES[family].folder_defaults(folder)
    return model_defaults(kind)
