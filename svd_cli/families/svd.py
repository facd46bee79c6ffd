"""Stable Video Diffusion (SVD, SVD-XT, XT 1.1, AnimateLCM-SVD, with LoRAs or a replacement UNet).

Conditioning as diffusers' `StableVideoDiffusionPipeline` builds it: the picture's CLIP image embedding (the
cross-attention context of every frame), its noise-augmented VAE latents concatenated to every frame's latents
on the channel axis, and the micro-conditioning ids (fps - 1, motion bucket, noise strength). The unconditional
half of guidance sees a zeroed embedding and zeroed image latents; the guidance scale rises linearly from the
first frame (min_cfg) to the last (max_cfg).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .base import Conditioning, EncodeLatents, GenerationSettings, UseComponent

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image
    from torch import nn


# The scheduler config Stability ships with every SVD checkpoint.
SCHEDULER = dict(
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


class SVD:
    name = "svd"
    defaults = {
        "frames": 14,
        "steps": 25,
        "fps": 7,
        "motion_bucket": 127,
        "noise_aug": 0.02,
        "min_cfg": 1.0,
        "max_cfg": 3.0,
        "size": (1024, 576),
        "sampler": "euler",
    }
    refused = {
        "elevation": "its models take no camera (sv3d-p's do)",
        "azimuths": "its models take no camera (sv3d-p's do)",
        "remove_background": "its models animate the whole photo (SV3D's orbit an object cut out of one)",
    }
    builtin = "tiny"
    pipelines = ("StableVideoDiffusionPipeline",)
    autoencoder = "AutoencoderKLTemporalDecoder"  # the diffusers class of its VAE (its decoder runs on all frames)
    components = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "image_encoder": "model"}

    def pipeline_class(self) -> type:
        from diffusers import StableVideoDiffusionPipeline

        return StableVideoDiffusionPipeline

    def adapter(self, source: Any, pipe: Any, device: torch.device, dtype: torch.dtype) -> SVDAdapter:
        adapter = SVDAdapter(source, pipe, device, dtype)
        adapter.family = self.name  # a family built on SVD's (sv3d.py) runs its components through the same adapter
        return adapter

    def build_components(self, configs: dict[str, dict]) -> dict[str, nn.Module]:
        import diffusers
        from diffusers import UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        clip = {key: value for key, value in configs["image_encoder"].items() if not key.startswith("_")}
        return {  # in this order: a seed gives the built-in model the same weights every time
            "unet": UNetSpatioTemporalConditionModel.from_config(configs["unet"]),
            "vae": getattr(diffusers, self.autoencoder).from_config(configs["vae"]),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(clip)),
        }

    def assemble(self, components: dict[str, Any], scheduler: dict[str, Any]) -> Any:
        from diffusers import EulerDiscreteScheduler
        from transformers import CLIPImageProcessor

        return self.pipeline_class()(
            vae=components["vae"],
            image_encoder=components["image_encoder"],
            unet=components["unet"],
            scheduler=EulerDiscreteScheduler.from_config(scheduler),
            feature_extractor=CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}),
        )

    def folder_defaults(self, folder: Path) -> dict[str, Any]:
        """The defaults, with the UNet's own frame count (14 for SVD, 25 for the XT models)."""
        defaults = dict(self.defaults)
        try:
            config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
            defaults["frames"] = int(config.get("num_frames", defaults["frames"]))
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        return defaults

    def condition(
        self,
        model: Any,
        image: Image.Image,
        settings: GenerationSettings,
        generator: torch.Generator,
        *,
        use: UseComponent,
        encode_latents: EncodeLatents,
    ) -> Conditioning:
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        device = model.device
        # The CLIP embedding every frame's cross-attention looks at.
        with use("image_encoder"):
            embeddings = model.encode_image(image, device)
        # The noise-augmented picture's VAE latents, the UNet's per-frame conditioning.
        pixels = model.preprocess(image, height=settings.height, width=settings.width).to(device)
        noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
        pixels = pixels + settings.noise_aug * noise
        with use("vae_encoder"):
            image_latents = encode_latents(pixels).to(embeddings.dtype)
        image_latents = image_latents.unsqueeze(1).repeat(1, settings.frames, 1, 1, 1)
        # The micro-conditioning ids; everything in the denoiser's dtype (the model's, unless the NaN guard widened
        # it).
        work = model.unet.dtype
        embeddings, image_latents = embeddings.to(work), image_latents.to(work)
        added_time_ids = torch.tensor([self.micro_conditioning(settings)], dtype=work).to(device)
        return Conditioning(
            {"image_latents": image_latents, "embeddings": embeddings, "added_time_ids": added_time_ids}
        )

    def micro_conditioning(self, settings: GenerationSettings) -> list[float]:
        """The values the UNet embeds beside the timestep: fps (the model was trained on fps - 1), motion bucket,
        noise strength."""
        return [settings.fps - 1, settings.motion_bucket, settings.noise_aug]

    def latent_shape(self, model: Any, settings: GenerationSettings) -> tuple[int, ...]:
        factor = model.spatial_factor
        return (1, settings.frames, model.latent_channels, settings.height // factor, settings.width // factor)

    def clean_latents(
        self,
        model: Any,
        pictures: list[Image.Image],
        settings: GenerationSettings,
        *,
        use: UseComponent,
        encode_latents: EncodeLatents,
    ) -> torch.Tensor:
        import torch

        # Each picture's VAE latents (one at a time: a long window never holds every frame's activations), without
        # noise augmentation, in the scaled space the UNet denoises.
        latents = []
        with use("vae_encoder"):
            for picture in pictures:
                pixels = model.preprocess(picture, height=settings.height, width=settings.width).to(model.device)
                latents.append(encode_latents(pixels) * model.scaling_factor)
        return torch.stack(latents, dim=1).to(model.unet.dtype)

    def guidance(self, settings: GenerationSettings, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        import torch

        guidance = torch.linspace(settings.min_cfg, settings.max_cfg, settings.frames).to(device, dtype)
        return guidance[None, :, None, None, None]

    def unconditional(
        self, conditioning: Conditioning, settings: GenerationSettings, always: bool = False
    ) -> Conditioning | None:
        import torch

        if (
            settings.max_cfg <= 1.0 and not always
        ):  # a scale of 1 everywhere is the conditional prediction: one call a step
            return None
        inputs = conditioning.inputs
        return Conditioning(
            {"image_latents": torch.zeros_like(inputs["image_latents"]),
             "embeddings": torch.zeros_like(inputs["embeddings"]), "added_time_ids": inputs["added_time_ids"]}
        )  # fmt: skip

    def prepare_picture(self, image: Image.Image, size: tuple[int, int]) -> Image.Image | None:
        return None  # diffusers' pipeline takes the picture as given: svd's fit

    def check_settings(self, settings: GenerationSettings) -> tuple[str, str] | None:
        return None  # the option schema's ranges are SVD's

    def output_frames(self, frames: np.ndarray, image: Image.Image) -> np.ndarray:
        """The decoded frames as the video shows them: SVD's, as decoded."""
        return frames

    def denoise(self, unet: Any, latents: torch.Tensor, timestep: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        import torch

        return unet(
            torch.cat([latents, inputs["image_latents"]], dim=2),
            timestep,
            encoder_hidden_states=inputs["embeddings"],
            added_time_ids=inputs["added_time_ids"],
            return_dict=False,
        )[0]


class SVDAdapter:
    """Stable Video Diffusion: CLIP image encoder, VAE (encoder and temporal decoder), spatio-temporal UNet."""

    family = SVD.name

    def __init__(self, source: Any, pipe, device: torch.device, dtype: torch.dtype):
        self.source = source
        self.pipe = pipe  # the diffusers pipeline: our components, and diffusers' own pipeline in the tests
        self.device = device
        self.dtype = dtype
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.image_encoder = pipe.image_encoder
        self.feature_extractor = pipe.feature_extractor
        self.scheduler_config = pipe.scheduler.config
        self._scheduler_class = type(pipe.scheduler)
        self.video_processor = pipe.video_processor

    # --- what the memory engine sees ---------------------------------------------------------------------

    def components(self) -> dict[str, nn.Module]:
        """Every component by role; placement moves them, the estimate sizes them."""
        from torch import nn

        return {
            "image_encoder": self.image_encoder,
            "vae_encoder": nn.ModuleList([self.vae.encoder, self.vae.quant_conv]),
            "denoiser": self.unet,
            # The per-frame AutoencoderKL (image-decoder files) runs its post_quant_conv before the decoder.
            "decoder": nn.ModuleList(
                [m for m in (getattr(self.vae, "post_quant_conv", None), self.vae.decoder) if m is not None]
            ),  # fmt: skip
        }

    def attention_modules(self) -> list[nn.Module]:
        """Modules whose attention processors the memory plan chooses."""
        return [self.unet, self.vae]

    def role_bytes(self) -> dict[str, int]:
        """Bytes of weights per role of the estimate: conditioning encoder, denoiser, autoencoder."""

        def nbytes(module) -> int:
            return sum(p.numel() * p.element_size() for p in module.parameters())

        return {"encoder": nbytes(self.image_encoder), "denoiser": nbytes(self.unet), "autoencoder": nbytes(self.vae)}

    @property
    def denoiser_base_channels(self) -> int:
        return self.unet.config.block_out_channels[0]

    @property
    def decoder_base_channels(self) -> int:
        return self.vae.config.block_out_channels[0]

    # --- what the animate stage uses ---------------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels // 2  # the other half is the conditioning image's latents

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return self.vae.config.scaling_factor

    def new_scheduler(self, sampler: str = "euler"):
        """A fresh scheduler per video, so a retry or the next video starts clean.

        "euler" is the scheduler the checkpoint ships (diffusers' Euler over SVD's EDM sigmas); "animatelcm" is
        the consistency sampler of AnimateLCM-SVD (animatelcm.py).
        """
        if sampler == "animatelcm":
            from .animatelcm import AnimateLCMSampler

            return AnimateLCMSampler()
        return self._scheduler_class.from_config(self.scheduler_config)

    def preprocess(self, image, height: int, width: int) -> torch.Tensor:
        """The picture as a (1, 3, H, W) tensor in [-1, 1]."""
        return self.video_processor.preprocess(image, height=height, width=width)

    def encode_image(self, image, device: torch.device) -> torch.Tensor:
        """CLIP image embedding (1, 1, D) of a PIL picture, as SVD was trained: anti-aliased resize to 224."""
        import numpy as np
        import torch

        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        size = self.feature_extractor.crop_size
        small = resize_antialiased(pixels * 2.0 - 1.0, (size["height"], size["width"]))
        small = (small + 1.0) / 2.0
        clip_input = self.feature_extractor(
            images=small, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
            return_tensors="pt",
        ).pixel_values  # fmt: skip
        dtype = next(self.image_encoder.parameters()).dtype
        return self.image_encoder(clip_input.to(device=device, dtype=dtype)).image_embeds.unsqueeze(1)


def resize_antialiased(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gaussian low-pass then bicubic resize: SVD's (kornia-style) downscale of the conditioning image.

    The blur's sigma is (factor - 1) / 2 per axis (as scikit-image chooses it) over a kernel of 4 sigma, at
    least 3 taps and odd, applied as two 1-D passes with reflected borders.
    """
    import torch
    import torch.nn.functional as F

    height, width = pixels.shape[-2:]
    sigma_y = max((height / size[0] - 1.0) / 2.0, 0.001)
    sigma_x = max((width / size[1] - 1.0) / 2.0, 0.001)
    taps_y, taps_x = int(max(4.0 * sigma_y, 3)), int(max(4.0 * sigma_x, 3))
    taps_y += 1 - taps_y % 2
    taps_x += 1 - taps_x % 2
    sigmas = torch.tensor([[sigma_y, sigma_x]], dtype=pixels.dtype)
    blurred = _blur_1d(pixels, _gaussian_taps(taps_x, sigmas[:, 1:2]), horizontal=True)
    blurred = _blur_1d(blurred, _gaussian_taps(taps_y, sigmas[:, 0:1]), horizontal=False)
    return F.interpolate(blurred, size=size, mode="bicubic", align_corners=True)


def _gaussian_taps(taps: int, sigma: torch.Tensor) -> torch.Tensor:
    import torch

    x = (torch.arange(taps, dtype=sigma.dtype) - taps // 2).expand(1, -1)
    weights = torch.exp(-x.pow(2.0) / (2 * sigma.pow(2.0)))
    return weights / weights.sum(-1, keepdim=True)


def _blur_1d(pixels: torch.Tensor, taps: torch.Tensor, horizontal: bool) -> torch.Tensor:
    """Depthwise convolution of every channel with `taps` along one axis, borders reflected."""
    import torch.nn.functional as F

    batch, channels, height, width = pixels.shape
    n = taps.shape[-1]
    kernel = taps.view(1, 1, 1, n) if horizontal else taps.view(1, 1, n, 1)
    kernel = kernel.to(device=pixels.device, dtype=pixels.dtype).expand(channels, -1, -1, -1)
    front, rear = (n - 1) // 2, (n - 1) - (n - 1) // 2
    padding = [front, rear, 0, 0] if horizontal else [0, 0, front, rear]
    padded = F.pad(pixels, padding, mode="reflect")
    out = F.conv2d(padded, kernel.reshape(channels, 1, *kernel.shape[-2:]), groups=channels)
    return out.view(batch, channels, height, width)
