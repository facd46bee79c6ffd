"""Model kinds: what a registry entry or a model folder can be, and the defaults each kind brings.

Plain data, importable without torch: planning a batch (names, resume) needs the defaults long before any
model is loaded. The adapter that builds and runs each kind lives in `adapters.py`.
"""

from __future__ import annotations

from pathlib import Path

# Per kind: its sampler (also a model default), the default of every setting the model decides (see
# options.GENERATION), the setting that names a model of this kind, and the built-in model that works offline.
KIND_DEFAULTS: dict[str, dict] = {
    "svd": {
        "sampler": "euler",
        "option": "model",
        "builtin": "tiny",
        "role": "an image-to-video model",
        "places": "a folder or a Hub repo id",
        "defaults": {
            "frames": 14,
            "steps": 25,
            "fps": 7,
            "motion_bucket": 127,
            "noise_aug": 0.02,
            "min_cfg": 1.0,
            "max_cfg": 3.0,
            "size": (1024, 576),
            "sampler": "euler",
        },
    },
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
}
# The kinds whose models are one safetensors file rather than a diffusers folder.
FILE_KINDS = ("upscaler", "interpolator")
# A diffusers pipeline class that makes videos from an image; every other pipeline in a folder is taken
# for a text-to-image model (AutoPipelineForText2Image refuses what it cannot load).
VIDEO_PIPELINES = ("StableVideoDiffusionPipeline",)


def kind_defaults(kind: str) -> dict:
    """A fresh copy of a kind's defaults (callers may change it)."""
    return dict(KIND_DEFAULTS[kind]["defaults"])


def folder_kind(folder: Path) -> str | None:
    """The kind of the pipeline a diffusers-layout folder holds (from model_index.json), None if unreadable."""
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    return "svd" if name in VIDEO_PIPELINES else "text-to-image"


def folder_defaults(folder: Path, kind: str = "svd") -> dict:
    """Defaults for a model folder svd has no registry entry for: the kind's, with the UNet's own frame count."""
    import json

    defaults = kind_defaults(kind)
    if kind != "svd":
        return defaults
    try:
        config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        defaults["frames"] = int(config.get("num_frames", defaults["frames"]))
    except (OSError, ValueError, TypeError):
        pass
    return defaults
