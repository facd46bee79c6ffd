"""A second model family that lives outside svd_cli: what a plug-in family needs, and nothing more.

`Toy` animates with the SVD UNet and temporal VAE classes but no image encoder: its folder holds only `unet/`
and `vae/` under its own pipeline class (`ToyVideoPipeline` in model_index.json), its cross-attention context
is a constant, its guidance the same scale on every frame. `build_toy_model` saves one with random weights the
way diffusers saves any pipeline; the tests register `Toy` in `FAMILIES` at run time and load it by folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    UNetSpatioTemporalConditionModel,
)
from diffusers.video_processor import VideoProcessor

from svd_cli.families import Conditioning
from svd_cli.families.svd import SVDAdapter
from svd_cli.models.architectures import SVD_SCHEDULER, TINY_UNET, TINY_VAE


class ToyVideoPipeline(DiffusionPipeline):
    """The components of a toy folder (diffusers reads and writes it; svd runs the loop itself)."""

    def __init__(self, unet, vae, scheduler):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler)
        self.video_processor = VideoProcessor(vae_scale_factor=8)


def build_toy_model(folder: Path, seed: int = 7) -> Path:
    torch.manual_seed(seed)
    toy = Toy()
    pipe = toy.assemble(toy.build_components({"unet": {**TINY_UNET, "num_frames": 3}, "vae": TINY_VAE}), SVD_SCHEDULER)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


class ToyAdapter(SVDAdapter):
    """SVD's adapter without the image encoder: the memory engine sees the UNet and the VAE only."""

    family = "toy"

    def __init__(self, source, pipe, device, dtype):
        self.source, self.pipe, self.device, self.dtype = source, pipe, device, dtype
        self.unet, self.vae, self.image_encoder = pipe.unet, pipe.vae, None
        self.scheduler_config, self._scheduler_class = pipe.scheduler.config, type(pipe.scheduler)
        self.video_processor = pipe.video_processor

    def components(self) -> dict[str, Any]:
        return {key: module for key, module in super().components().items() if key != "image_encoder"}

    def role_bytes(self) -> dict[str, int]:
        def nbytes(module) -> int:
            return sum(p.numel() * p.element_size() for p in module.parameters())

        return {"encoder": 0, "denoiser": nbytes(self.unet), "autoencoder": nbytes(self.vae)}


class Toy:
    name = "toy"
    defaults = {"frames": 3, "steps": 2, "fps": 8, "motion_bucket": 100, "noise_aug": 0.0, "min_cfg": 2.0,
                "max_cfg": 2.0, "size": (128, 64), "sampler": "euler"}  # fmt: skip
    refused: dict[str, str] = {}
    builtin = None
    pipelines = ("ToyVideoPipeline",)
    components = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model"}

    def __init__(self) -> None:
        self.denoiser_calls = 0

    def pipeline_class(self) -> type:
        return ToyVideoPipeline

    def adapter(self, source, pipe, device, dtype) -> ToyAdapter:
        return ToyAdapter(source, pipe, device, dtype)

    def build_components(self, configs: dict[str, dict]) -> dict[str, Any]:
        return {"unet": UNetSpatioTemporalConditionModel.from_config(configs["unet"]),
                "vae": AutoencoderKLTemporalDecoder.from_config(configs["vae"])}  # fmt: skip

    def assemble(self, components: dict[str, Any], scheduler: dict[str, Any]) -> ToyVideoPipeline:
        return ToyVideoPipeline(**components, scheduler=EulerDiscreteScheduler.from_config(scheduler))

    def folder_defaults(self, folder: Path) -> dict[str, Any]:
        return dict(self.defaults)

    def condition(self, model, image, settings, generator, *, use, encode_latents) -> Conditioning:
        pixels = model.preprocess(image, height=settings.height, width=settings.width).to(model.device)
        with use("vae_encoder"):
            latents = encode_latents(pixels).to(model.unet.dtype)
        context = torch.ones(1, 1, model.unet.config.cross_attention_dim, dtype=latents.dtype, device=latents.device)
        ids = torch.tensor([[settings.fps, settings.motion_bucket, 0.0]], dtype=latents.dtype, device=latents.device)
        return Conditioning({"image_latents": latents.unsqueeze(1).repeat(1, settings.frames, 1, 1, 1),
                             "context": context, "ids": ids})  # fmt: skip

    def latent_shape(self, model, settings) -> tuple[int, ...]:
        return (1, settings.frames, model.latent_channels, settings.height // 8, settings.width // 8)

    def clean_latents(self, model, pictures, settings, *, use, encode_latents) -> torch.Tensor:
        with use("vae_encoder"):
            latents = [encode_latents(model.preprocess(p, height=settings.height, width=settings.width))
                       for p in pictures]  # fmt: skip
        return (torch.stack(latents, dim=1) * model.scaling_factor).to(model.unet.dtype)

    def guidance(self, settings, device, dtype) -> torch.Tensor:
        return torch.full((1, settings.frames, 1, 1, 1), settings.max_cfg, device=device, dtype=dtype)

    def unconditional(self, conditioning: Conditioning, settings, always: bool = False) -> Conditioning | None:
        if settings.max_cfg <= 1.0 and not always:
            return None
        inputs = conditioning.inputs
        return Conditioning({**inputs, "image_latents": torch.zeros_like(inputs["image_latents"])})

    def prepare_picture(self, image, size):
        return None

    def check_settings(self, settings):
        return None

    def output_frames(self, frames, image):
        return frames

    def denoise(self, unet, latents, timestep, **inputs) -> torch.Tensor:
        self.denoiser_calls += 1
        sample = torch.cat([latents, inputs["image_latents"]], dim=2)
        context, ids = inputs["context"], inputs["ids"]
        return unet(sample, timestep, encoder_hidden_states=context, added_time_ids=ids, return_dict=False)[0]
