"""The built-in `tiny`, `tiny-t2i`, `tiny-upscaler`, `tiny-rife` and `tiny-taesd` models: checks with no download.

`tiny` has the same component classes as Stable Video Diffusion (the spatio-temporal UNet, the temporal-decoder
VAE with the real scale factor 8, a CLIP vision encoder with projection and SVD's own Euler scheduler
config); `tiny-t2i` is SDXL's text-to-image pipeline in miniature (two CLIP text encoders with a tokenizer
built from a hand-written vocabulary, UNet, VAE, Euler). Both have random weights drawn from a fixed seed,
are saved in diffusers layout in the svd cache and then loaded through exactly the same code as the real
checkpoints. Their pictures are noise. `tiny-upscaler` is spandrel's ESRGAN network (Real-ESRGAN x2plus's
layout: pixel-unshuffle input, scale 2) with one block and 8 features, saved as one safetensors file and
loaded by models/upscaler.py like any upscaler file; `tiny-rife` is RIFE 4.13's flow network with narrow
blocks (16/16/8/8, an 8-wide feature head), loaded by models/rife.py like the real file; `tiny-taesd` is TAESD's
decoder (its real, already tiny architecture) with random weights, saved under TAESD's own key names so that
models/decoder.py reads it like the real file; `tiny-u2net` is an ONNX file with U^2-Net's input and output
(models/cutout.py), read by rembg like the real one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..kinds import VIDEO, weights_suffix
from ..paths import cache_dir
from ..registry import get_entry
from .architectures import FAMILY, SV3D_FAMILY, SV3D_P_FAMILY, build_random_pipeline, build_tiny_text_to_image
from .cutout import tiny_u2net_bytes
from .decoder import new_decoder, to_taesd
from .layout import damaged_files, weights_file_problem
from .quiet import quiet_transformers
from .upscaler import build_upscaler_network

# Bump when the TINY_* configs in architectures.py change, so an old build in the cache is not reused.
TINY_VERSIONS = {
    "tiny": 1,
    "tiny-sv3d": 2,
    "tiny-sv3d-p": 1,
    "tiny-t2i": 1,
    "tiny-upscaler": 1,
    "tiny-rife": 1,
    "tiny-taesd": 1,
    "tiny-u2net": 1,
}
# The built-in models in diffusers layout: their kind and family.
TINY_FOLDERS = {
    "tiny": (VIDEO, FAMILY),
    "tiny-sv3d": (VIDEO, SV3D_FAMILY),
    "tiny-sv3d-p": (VIDEO, SV3D_P_FAMILY),
    "tiny-t2i": ("text-to-image", None),
}
TINY_SEED = 20231121


def tiny_model_dir(name: str = "tiny") -> Path:
    return cache_dir() / "models" / f"{name}-v{TINY_VERSIONS[name]}"


def _build(name: str):

    return build_tiny_text_to_image(TINY_SEED) if name == "tiny-t2i" else build_random_pipeline(name, seed=TINY_SEED)


def ensure_tiny_model(name: str = "tiny") -> Path:
    """Build a built-in model into the cache once (again if a file of it is damaged); later calls return it."""

    kind, family = TINY_FOLDERS[name]
    target = tiny_model_dir(name)
    if (target / "model_index.json").is_file() and not damaged_files(target, None, kind, family):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # damaged (a truncated file, a full disk when it was saved): build it again
        broken = target.with_name(f".{target.name}-damaged-{os.getpid()}")
        os.replace(target, broken)
        shutil.rmtree(broken, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        pipe = _build(name)
        with quiet_transformers():
            pipe.save_pretrained(staging, safe_serialization=True)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process finished first: its copy is identical (same seed), keep it.
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _file_weights(name: str) -> dict:
    """The weights of a built-in single-file model, random from the fixed seed, named as its real file names them."""
    if name == "tiny-rife":
        from .rife import build_rife_network

        return build_rife_network("tiny", seed=TINY_SEED).state_dict()
    if name == "tiny-taesd":  # TAESD's real architecture (it is tiny already), saved in TAESD's own key layout
        import torch

        torch.manual_seed(TINY_SEED)
        return to_taesd(new_decoder().state_dict())
    return build_upscaler_network("tiny-upscaler", seed=TINY_SEED).state_dict()


def tiny_file(name: str) -> Path:
    """Where the built-in single-file model `name` (tiny-upscaler, tiny-rife, tiny-taesd, tiny-u2net) is saved."""
    return cache_dir() / "models" / f"{name}-v{TINY_VERSIONS[name]}{weights_suffix(get_entry(name).kind)}"


def ensure_tiny_file(name: str) -> Path:
    """Save a built-in single-file model's file once (again if it is damaged); later calls return it."""
    from safetensors.torch import save_file

    target = tiny_file(name)
    if target.is_file() and weights_file_problem(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if name == "tiny-u2net":
            staging.write_bytes(tiny_u2net_bytes())
        else:
            save_file({k: v.contiguous() for k, v in _file_weights(name).items()}, str(staging))
        os.replace(staging, target)  # atomic: a reader sees the old file or the whole new one
    finally:
        staging.unlink(missing_ok=True)
    return target
