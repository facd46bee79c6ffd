"""Stable Video 3D (SV3D, Voleti et al. 2024): SVD fine-tuned to turn a picture of an object into an orbit around it.

As Stability's scripts/sampling/simple_video_sample.py runs `sv3d_u` (generative-models, with
scripts/sampling/configs/sv3d_u.yaml):

- the UNet, the CLIP image embedding and the concatenated noise-augmented VAE latents are SVD's (svd.py); the
  autoencoder decodes each frame on its own (an image AutoencoderKL, not SVD's temporal decoder);
- the UNet's conditioning vector is the augmentation strength alone, embedded 256 wide by sgm's
  ConcatTimestepEmbedderND (cos then sin, frequencies 10000^(-i/128)), which is diffusers' `add_time_proj`
  with one id; the script fixes the strength at 1e-5 whatever it is asked;
- the guidance scale per frame is a triangle (sgm's TrianglePredictionGuider, period 1): min_cfg (1.0) at the
  first and the last frame, max_cfg (2.5) half way;
- 21 frames at 576x576, 50 Euler steps over SVD's EDM sigmas (0.002 to 700, rho 7), sgm's v-scaling: SVD's;
- the last frame is the input view, so the video shows the input picture there.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .base import GenerationSettings
from .svd import SVD, SVDAdapter

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn

FRAMES = 21  # the script's num_frames for both SV3D models, whatever it is given


def triangle(frames: int, low: float, high: float) -> list[float]:
    """sgm's TrianglePredictionGuider scales (period 1): `low` at both ends, `high` half way, linear between."""
    values = [i / (frames - 1) for i in range(frames)] if frames > 1 else [0.0]
    return [low + (high - low) * 2 * abs(v - int(v + 0.5)) for v in values]


@functools.cache
def sv3d_pipeline_class() -> type:
    """The diffusers pipeline class of an SV3D folder (its model_index.json names it): SVD's pipeline, whose
    components it holds, under SV3D's own name so that a folder says which family it is. Made on first use, so
    that diffusers is imported only when a model loads."""
    from diffusers import StableVideoDiffusionPipeline

    return type("SV3DPipeline", (StableVideoDiffusionPipeline,), {"__module__": __name__})


class SV3D(SVD):
    name = "sv3d"
    defaults = {
        "frames": FRAMES,
        "steps": 50,
        "fps": 10,  # the script's video (imageio's default rate); the model takes no fps
        "motion_bucket": 127,  # not an input of SV3D's UNet
        "noise_aug": 1e-5,
        "min_cfg": 1.0,
        "max_cfg": 2.5,
        "size": (576, 576),
        "sampler": "euler",
    }
    refused = {
        "frames": f"it makes {FRAMES} views of an orbit, as Stability's script does whatever it is asked",
        "noise_aug": "Stability's script fixes its augmentation at 1e-5",
        "motion_bucket": "its UNet takes no motion bucket",
    }
    builtin = "tiny-sv3d"
    pipelines = ("SV3DPipeline",)

    def pipeline_class(self) -> type:
        return sv3d_pipeline_class()

    def adapter(self, source: Any, pipe: Any, device: torch.device, dtype: torch.dtype) -> SV3DAdapter:
        return SV3DAdapter(source, pipe, device, dtype)

    def build_components(self, configs: dict[str, dict]) -> dict[str, nn.Module]:
        from diffusers import AutoencoderKL, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        clip = {key: value for key, value in configs["image_encoder"].items() if not key.startswith("_")}
        return {
            "unet": UNetSpatioTemporalConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKL.from_config(configs["vae"]),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(clip)),
        }

    def folder_defaults(self, folder) -> dict[str, Any]:
        return dict(self.defaults)

    def micro_conditioning(self, settings: GenerationSettings) -> list[float]:
        """sv3d_u's conditioning vector: the augmentation strength, embedded by the UNet's add_time_proj."""
        return [settings.noise_aug]

    def guidance(self, settings: GenerationSettings, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        import torch

        scales = triangle(settings.frames, settings.min_cfg, settings.max_cfg)
        return torch.tensor(scales, dtype=torch.float32).to(device, dtype)[None, :, None, None, None]

    def output_frames(self, frames: np.ndarray, image: Image.Image) -> np.ndarray:
        """The last frame is the input view: the script puts the input picture there after decoding."""
        import numpy as np

        picture = np.asarray(image.convert("RGB"))
        frames[-1] = picture if frames.dtype == np.uint8 else picture.astype(np.float32) / 255.0
        return frames


class SV3DAdapter(SVDAdapter):
    """SVD's adapter over SV3D's components (its autoencoder decodes frame by frame)."""

    family = SV3D.name
