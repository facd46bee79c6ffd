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

from .paths import cache_dir

# Bump when the configs below change, so an old build in the cache is not reused.
TINY_VERSION = 1
TINY_SEED = 20231121

TINY_UNET = dict(
    sample_size=32,
    in_channels=8,
    out_channels=4,
    down_block_types=("DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"),
    up_block_types=("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"),
    block_out_channels=(32, 64),
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24,
    layers_per_block=1,
    cross_attention_dim=32,
    num_attention_heads=(2, 4),
    num_frames=14,
)
# Four blocks, as in SVD, give the real VAE scale factor 2**3 = 8; 32 channels is the least GroupNorm(32) allows.
TINY_VAE = dict(
    block_out_channels=(32, 32, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    layers_per_block=1,
    latent_channels=4,
    sample_size=256,
)
TINY_CLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_hidden_layers=2,
    patch_size=32,
    image_size=224,
    projection_dim=32,
)
# The scheduler config Stability ships with every SVD checkpoint.
SVD_SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    set_alpha_to_one=False,
    sigma_max=700.0,
    sigma_min=0.002,
    skip_prk_steps=True,
    steps_offset=1,
    timestep_spacing="leading",
    timestep_type="continuous",
    trained_betas=None,
    use_karras_sigmas=True,
)


def tiny_model_dir() -> Path:
    return cache_dir() / "models" / f"tiny-v{TINY_VERSION}"


def ensure_tiny_model() -> Path:
    """Build the tiny model into the cache once; later calls return the saved folder."""
    from .loading import quiet_transformers

    target = tiny_model_dir()
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        pipe = build_tiny_pipeline()
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


def build_tiny_pipeline():
    """The tiny pipeline in memory, identical on every machine for the same library versions."""
    import torch

    from .loading import quiet_transformers

    with quiet_transformers():
        from diffusers import (
            AutoencoderKLTemporalDecoder,
            EulerDiscreteScheduler,
            StableVideoDiffusionPipeline,
            UNetSpatioTemporalConditionModel,
        )
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        unet = UNetSpatioTemporalConditionModel(**TINY_UNET)
        vae = AutoencoderKLTemporalDecoder(**TINY_VAE)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP))
    with quiet_transformers():
        feature_extractor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
        # from_config, as from_pretrained does, accepts the config's keys that this scheduler ignores.
        scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER)
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )
