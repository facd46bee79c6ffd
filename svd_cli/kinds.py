"""Model kinds: what a registry entry or a model folder can be, and the defaults each kind brings.

A kind is a video model family (families/: svd) or one of the other kinds below (a text-to-image model, an
upscaler, an interpolator). Importable without torch: planning a batch (names, resume) needs the defaults
long before any model is loaded. The adapter that builds and runs each kind is its family's, or in
models/adapters.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from .families import FAMILIES, family_reading

# What a setting taking a video model (any family's) says of it; the families bring the rest (families/).
VIDEO = "video"  # the kind the `model` setting asks for: a model of any family in FAMILIES
_VIDEO_ENTRY = {"option": "model", "role": "an image-to-video model", "places": "a folder or a Hub repo id"}

# Per kind that is not a video family: its sampler, the default of every setting the model decides, the
# setting that names a model of this kind, and the built-in model that works offline.
OTHER_KINDS: dict[str, dict] = {
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
}
# The kinds whose models are one safetensors file rather than a diffusers folder.
FILE_KINDS = ("upscaler", "interpolator", "decoder")
# The tiny decoder a draft (the draft option) decodes with, and a live preview beside the full VAE.
DRAFT_DECODER = "taesd"


class _Kinds(Mapping):
    """Every kind of model by name: each video family's (read live from FAMILIES, so a family added at run time is
    one), then the others. `VIDEO` is looked up too (any family: what the `model` setting takes) but is not a
    kind a model can have, so it is neither listed nor `in` it."""

    def __getitem__(self, kind: str) -> dict:
        if kind in FAMILIES:
            family = FAMILIES[kind]
            return {**_VIDEO_ENTRY, "sampler": family.defaults["sampler"], "builtin": family.builtin,
                    "defaults": family.defaults}  # fmt: skip
        if kind == VIDEO:
            return {**_VIDEO_ENTRY, "builtin": next(f.builtin for f in FAMILIES.values() if f.builtin)}
        return OTHER_KINDS[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in FAMILIES or kind in OTHER_KINDS

    def __iter__(self) -> Iterator[str]:
        return iter([*FAMILIES, *OTHER_KINDS])

    def __len__(self) -> int:
        return len(FAMILIES) + len(OTHER_KINDS)


KIND_DEFAULTS: Mapping[str, dict] = _Kinds()


def kind_defaults(kind: str) -> dict:
    """A fresh copy of a kind's defaults (callers may change it)."""
    return dict(KIND_DEFAULTS[kind]["defaults"])


def folder_kind(folder: Path) -> str | None:
    """The kind of the pipeline a diffusers-layout folder holds (from model_index.json), None if unreadable.

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
    return family.name if family is not None else "text-to-image"


def folder_defaults(folder: Path, kind: str) -> dict:
    """Defaults for a model folder of `kind` svd has no registry entry for: its family's (with what the folder's
    configs say, such as the UNet's frame count), or its kind's."""
    if kind in FAMILIES:
        return FAMILIES[kind].folder_defaults(folder)
    return kind_defaults(kind)
