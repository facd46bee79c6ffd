"""Component configs of the SVD architectures, and the one builder of random-weight pipelines.

The full-size configs are those of the real checkpoints, shipped so svd can build the architecture without
downloading weights: `svd bench` times it with random weights (same FLOPs and memory traffic as the real
ones) and `svd doctor` sizes it for the memory estimates. The tiny configs make the built-in `tiny` model.

Values are those of stabilityai/stable-video-diffusion-img2vid(-xt)'s unet/, vae/ and image_encoder/
config.json files (the two models share every shape; only the UNet's default `num_frames` differs).
"""

from __future__ import annotations

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


SVD_UNET = dict(
    sample_size=96,
    in_channels=8,
    out_channels=4,
    down_block_types=(
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "DownBlockSpatioTemporal",
    ),
    up_block_types=(
        "UpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
    ),
    block_out_channels=(320, 640, 1280, 1280),
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=768,
    layers_per_block=2,
    cross_attention_dim=1024,
    transformer_layers_per_block=1,
    num_attention_heads=(5, 10, 20, 20),
    num_frames=25,
)
SVD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=768,
    scaling_factor=0.18215,
    force_upcast=True,
)
# OpenCLIP ViT-H/14 vision tower with its 1024-d projection.
SVD_CLIP = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=16,
    num_hidden_layers=32,
    patch_size=14,
    image_size=224,
    projection_dim=1024,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)

ARCHITECTURES = {
    "svd-xt": (SVD_UNET, SVD_VAE, SVD_CLIP),
    "svd": ({**SVD_UNET, "num_frames": 14}, SVD_VAE, SVD_CLIP),
    "tiny": (TINY_UNET, TINY_VAE, TINY_CLIP),
}


def build_random_pipeline(arch: str, device="cpu", dtype=None, seed: int = 0):
    """A StableVideoDiffusionPipeline of architecture `arch` with random weights, built on `device`.

    With device="meta" nothing is allocated (for counting parameters).
    """
    import torch

    from .quiet import quiet_transformers

    if arch not in ARCHITECTURES:
        from ..errors import OptionError

        raise OptionError("arch", arch, f"choose one of {', '.join(ARCHITECTURES)}.", allowed=tuple(ARCHITECTURES))
    unet_cfg, vae_cfg, clip_cfg = ARCHITECTURES[arch]
    with quiet_transformers():
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            unet = UNetSpatioTemporalConditionModel(**unet_cfg)
            vae = AutoencoderKLTemporalDecoder(**vae_cfg)
            image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg))
        if dtype is not None:
            for module in (unet, vae, image_encoder):
                module.to(dtype)
    return assemble_pipeline(unet, vae, image_encoder)


def assemble_pipeline(unet, vae, image_encoder):
    """The diffusers pipeline around three SVD components, with SVD's scheduler and CLIP preprocessing."""
    from .quiet import quiet_transformers

    with quiet_transformers():
        from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
        from transformers import CLIPImageProcessor

        pipe = StableVideoDiffusionPipeline(
            vae=vae,
            image_encoder=image_encoder,
            unet=unet,
            scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER),
            feature_extractor=CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}),
        )
    for module in (unet, vae, image_encoder):
        module.eval().requires_grad_(False)
    return pipe


def parameter_bytes(arch: str, dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes of each component's weights at `dtype_bytes` per parameter, counted on the meta device."""
    pipe = build_random_pipeline(arch, device="meta")
    return {
        name: sum(p.numel() for p in getattr(pipe, name).parameters()) * dtype_bytes
        for name in ("unet", "vae", "image_encoder")
    }
