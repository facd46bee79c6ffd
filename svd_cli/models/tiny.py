"""The built-in `tiny` model: an install check that needs no download.

It has the same component classes as Stable Video Diffusion (the spatio-temporal UNet, the temporal-decoder
VAE with the real scale factor 8, a CLIP vision encoder with projection and SVD's own Euler scheduler
config) with random weights drawn from a fixed seed. It is saved in diffusers layout in the svd cache and
then loaded through exactly the same code as the real checkpoints. Its videos are noise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..paths import cache_dir

# Bump when the TINY_* configs in architectures.py change, so an old build in the cache is not reused.
TINY_VERSION = 1
TINY_SEED = 20231121


def tiny_model_dir() -> Path:
    return cache_dir() / "models" / f"tiny-v{TINY_VERSION}"


def ensure_tiny_model() -> Path:
    """Build the tiny model into the cache once; later calls return the saved folder."""
    from .architectures import build_random_pipeline
    from .layout import damaged_files
    from .quiet import quiet_transformers

    target = tiny_model_dir()
    if (target / "model_index.json").is_file() and not damaged_files(target, None):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # damaged (a truncated file, a full disk when it was saved): build it again
        broken = target.with_name(f".{target.name}-damaged-{os.getpid()}")
        os.replace(target, broken)
        shutil.rmtree(broken, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        pipe = build_random_pipeline("tiny", seed=TINY_SEED)
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
