"""Stable Video Diffusion (SVD, SVD-XT, XT 1.1, AnimateLCM-SVD, with LoRAs or a replacement UNet).

Conditioning as diffusers' `StableVideoDiffusionPipeline` builds it: the picture's CLIP image embedding (the
cross-attention context of every frame), its noise-augmented VAE latents concatenated to every frame's latents
on the channel axis, and the micro-conditioning ids (fps - 1, motion bucket, noise strength). The unconditional
half of guidance sees a zeroed embedding and zeroed image latents; the guidance scale rises linearly from the
first frame (min_cfg) to the last (max_cfg).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Conditioning, EncodeLatents, UseComponent

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..options import GenerationSettings


class SVD:
    name = "svd"

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
        # Micro-conditioning: fps (the model was trained on fps - 1), motion bucket, noise strength. Everything
        # in the denoiser's dtype (the model's, unless the NaN guard widened it).
        work = model.unet.dtype
        embeddings, image_latents = embeddings.to(work), image_latents.to(work)
        added_time_ids = torch.tensor([[settings.fps - 1, settings.motion_bucket, settings.noise_aug]], dtype=work)
        added_time_ids = added_time_ids.to(device)
        return Conditioning(
            {"image_latents": image_latents, "embeddings": embeddings, "added_time_ids": added_time_ids}
        )

    def latent_shape(self, model: Any, settings: GenerationSettings) -> tuple[int, ...]:
        factor = model.spatial_factor
        return (1, settings.frames, model.latent_channels, settings.height // factor, settings.width // factor)

    def guidance(self, settings: GenerationSettings, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        import torch

        guidance = torch.linspace(settings.min_cfg, settings.max_cfg, settings.frames).to(device, dtype)
        return guidance[None, :, None, None, None]

    def unconditional(self, conditioning: Conditioning, settings: GenerationSettings) -> Conditioning | None:
        import torch

        if settings.max_cfg <= 1.0:  # a scale of 1 everywhere is the conditional prediction: one call a step
            return None
        inputs = conditioning.inputs
        return Conditioning(
            {"image_latents": torch.zeros_like(inputs["image_latents"]),
             "embeddings": torch.zeros_like(inputs["embeddings"]), "added_time_ids": inputs["added_time_ids"]}
        )  # fmt: skip

    def denoise(self, unet: Any, latents: torch.Tensor, timestep: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        import torch

        return unet(
            torch.cat([latents, inputs["image_latents"]], dim=2),
            timestep,
            encoder_hidden_states=inputs["embeddings"],
            added_time_ids=inputs["added_time_ids"],
            return_dict=False,
        )[0]
