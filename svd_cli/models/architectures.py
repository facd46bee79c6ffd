"""Component configs of the SVD architectures, and the one builder of random-weight pipelines.

Every architecture here is the svd family's (`FAMILY`, families/svd.py): `svd bench`, `svd doctor`, `svd plan`
and the simulator build its pipelines and run them behind that family's adapter.

The full-size configs are those of the real checkpoints, shipped so svd can build the architecture without
downloading weights: `svd bench` times it with random weights (same FLOPs and memory traffic as the real
ones) and `svd doctor` sizes it for the memory estimates. The tiny configs make the built-in `tiny` model.

Values are those of stabilityai/stable-video-diffusion-img2vid(-xt)'s unet/, vae/ and image_encoder/
config.json files (the two models share every shape; only the UNet's default `num_frames` differs).
"""

from __future__ import annotations

from ..errors import OptionError
from ..families import FAMILIES
from ..families.svd import SCHEDULER as SVD_SCHEDULER
from .quiet import quiet_transformers

FAMILY = "svd"  # the model family these architectures are (families/)
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

# The sv3d family's architectures (families/sv3d.py), from generative-models' configs/inference/sv3d_u.yaml and
# sv3d_p.yaml: SVD's UNet whose conditioning vector (adm_in_channels) is sv3d_u's one 256-wide embedding or
# sv3d_p's 256 + 512 + 512, 21 frames; and an image autoencoder whose decoder (first_stage_model, sgm's
# AutoencodingEngine) has no post_quant_conv, its encoder the conditioning embedder's AutoencoderKL's.
# `tiny-sv3d` is the family's built-in model.
SV3D_FAMILY = "sv3d"
SV3D_P_FAMILY = "sv3d-p"  # sv3d_p: the camera of each frame in its conditioning vector
SV3D_DECODER = {"up_block_types": ("UpDecoderBlock2D",) * 4, "use_post_quant_conv": False}
# By family: sv3d_u's (no camera) and sv3d_p's (a camera vector per frame).
SV3D_ARCHITECTURES_OF = {
    SV3D_FAMILY: {
        "sv3d-u": (
            {**SVD_UNET, "projection_class_embeddings_input_dim": 256, "num_frames": 21},
            {**SVD_VAE, **SV3D_DECODER},
            SVD_CLIP,
        ),
        "tiny-sv3d": (
            {**TINY_UNET, "projection_class_embeddings_input_dim": 8, "num_frames": 21},
            {**TINY_VAE, **SV3D_DECODER},
            TINY_CLIP,
        ),
    },
    SV3D_P_FAMILY: {
        "sv3d-p": (
            {**SVD_UNET, "projection_class_embeddings_input_dim": 1280, "num_frames": 21},
            {**SVD_VAE, **SV3D_DECODER},
            SVD_CLIP,
        ),
        # sv3d_p's vector keeps its real widths (256 + 512 + 512): the family embeds the camera at those.
        "tiny-sv3d-p": (
            {**TINY_UNET, "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 1280,
             "num_frames": 21},
            {**TINY_VAE, **SV3D_DECODER},
            TINY_CLIP,
        ),
    },
}  # fmt: skip
SV3D_ARCHITECTURES = {name: arch for archs in SV3D_ARCHITECTURES_OF.values() for name, arch in archs.items()}


def component_configs(arch: str) -> dict[str, dict]:
    """The config of each component of architecture `arch`, by its folder (unet, vae, image_encoder)."""
    unet, vae, image_encoder = ARCHITECTURES[arch] if arch in ARCHITECTURES else SV3D_ARCHITECTURES[arch]
    return {"unet": dict(unet), "vae": dict(vae), "image_encoder": dict(image_encoder)}


def architecture_family(arch: str) -> str:
    """The model family whose architecture `arch` is."""
    return next((family for family, archs in SV3D_ARCHITECTURES_OF.items() if arch in archs), FAMILY)


def build_random_pipeline(arch: str, device="cpu", dtype=None, seed: int = 0):
    """A StableVideoDiffusionPipeline of architecture `arch` with random weights, built on `device`.

    With device="meta" nothing is allocated (for counting parameters).
    """
    import torch

    known = (*ARCHITECTURES, *SV3D_ARCHITECTURES)
    if arch not in known:
        raise OptionError("arch", arch, f"choose one of {', '.join(known)}.", allowed=known)
    family = architecture_family(arch)
    with quiet_transformers(), torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        components = FAMILIES[family].build_components(component_configs(arch))
    if dtype is not None:
        for module in components.values():
            module.to(dtype)
    return assemble_pipeline(components, family)


def assemble_pipeline(components: dict, family: str):
    """The diffusers pipeline of `family` around its components (by folder), with SVD's scheduler."""
    with quiet_transformers():
        pipe = FAMILIES[family].assemble(components, SVD_SCHEDULER)
    for module in components.values():
        module.eval().requires_grad_(False)
    return pipe


# The built-in `tiny-t2i` text-to-image model: SDXL's pipeline (two CLIP text encoders, the second with its
# projection, a UNet with SDXL's "text_time" micro-conditioning, a VAE with the real scale factor 8) in
# miniature. The same StableDiffusionXLPipeline code runs it as runs the default, SDXL-Turbo.
TINY_T2I_TEXT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=2,
    projection_dim=32,
    max_position_embeddings=77,  # CLIP's limit, so over-long prompts are cut exactly where the real ones are
)
TINY_T2I_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 1),
    projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop ids x 8, plus the pooled text embedding
    cross_attention_dim=64,  # both text encoders' hidden states side by side
)
TINY_T2I_VAE = dict(
    block_out_channels=(32, 32, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    latent_channels=4,
    sample_size=256,
)
# SDXL-Turbo's scheduler: Euler, trailing timesteps (so one to four steps start from pure noise).
T2I_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="trailing",
)
# The tiny tokenizer's words: CLIP's byte-level alphabet covers any text; these merges give a few whole words.
TINY_T2I_WORDS = ("a", "the", "red", "fox", "in", "snow", "golden", "hour", "watercolor", "painting", "photo")


def tiny_clip_vocabulary() -> tuple[dict[str, int], list[str]]:
    """A CLIP BPE vocabulary (vocab.json) and merges (merges.txt) small enough to write by hand.

    CLIP's tokenizer is byte-level BPE with an end-of-word marker: the 256 byte symbols, each also as a
    word end, the merges that build the listed words, then the start and end tokens.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    symbols = [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab: dict[str, int] = {}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab[symbol] = len(vocab)
    merges: list[str] = []
    for word in TINY_T2I_WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pair = f"{parts[0]} {parts[1]}"
            if pair not in merges:
                merges.append(pair)
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def build_tiny_text_to_image(seed: int):
    """The `tiny-t2i` StableDiffusionXLPipeline with random weights from `seed`; its tokenizers are read from
    vocab.json / merges.txt files written here (nothing is downloaded)."""
    import json
    import tempfile
    from pathlib import Path

    import torch

    vocab, merges = tiny_clip_vocabulary()
    with quiet_transformers():
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        with tempfile.TemporaryDirectory(prefix="svd-tokenizer-") as folder:
            (Path(folder) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
            (Path(folder) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
            tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=TINY_T2I_TEXT["max_position_embeddings"])
        end = vocab["<|endoftext|>"]
        text_config = CLIPTextConfig(
            **TINY_T2I_TEXT, vocab_size=len(vocab), bos_token_id=vocab["<|startoftext|>"], eos_token_id=end,
            pad_token_id=end,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            text_encoder = CLIPTextModel(text_config)
            text_encoder_2 = CLIPTextModelWithProjection(text_config)
            unet = UNet2DConditionModel(**TINY_T2I_UNET)
            vae = AutoencoderKL(**TINY_T2I_VAE)
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler.from_config(T2I_SCHEDULER),
        )
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval().requires_grad_(False)
    return pipe


def parameter_bytes(arch: str, dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes of each component's weights at `dtype_bytes` per parameter, counted on the meta device."""
    pipe = build_random_pipeline(arch, device="meta")
    return {
        name: sum(p.numel() for p in getattr(pipe, name).parameters()) * dtype_bytes
        for name in ("unet", "vae", "image_encoder")
    }
