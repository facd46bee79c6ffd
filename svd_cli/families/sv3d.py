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

`sv3d_p` (scripts/sampling/configs/sv3d_p.yaml; the family `sv3d-p` here) also takes the camera of every frame:
its conditioning vector is, per frame, the augmentation embedded 256 wide, then the polar angle (90 degrees less
the elevation, in radians) and the azimuth (in radians, relative to the last frame's, modulo 360 degrees) each
embedded 512 wide, the same sinusoids (ConcatTimestepEmbedderND). diffusers' UNet adds one such embedding per
video; this family adds each frame's own (`per_frame_embedding`). The default path is the script's: elevation 10
degrees, 21 azimuths evenly round the circle ending on 0 (the input view); the elevation and azimuths settings
give another. The script's `azimuths_rad[:-1].sort()` sorts a copy, so the order stays as given.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .base import Conditioning, EncodeLatents, GenerationSettings, UseComponent
from .svd import SVD

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

FRAMES = 21  # the script's num_frames for both SV3D models, whatever it is given
ELEVATION = 10.0  # degrees: the script's default elevation of sv3d_p's orbit
# sv3d_p's conditioning vector: the augmentation, the polar angle and the azimuth, each embedded this wide.
CAMERA_WIDTHS = (256, 512, 512)


def sinusoids(values: list[float], width: int) -> torch.Tensor:
    """sgm's timestep_embedding of each value (float32): cos then sin of value * 10000^(-i / (width / 2))."""
    import torch

    half = width // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    angles = torch.tensor(values, dtype=torch.float64).float()[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def orbit_azimuths(frames: int) -> list[float]:
    """The script's default azimuths in degrees: evenly round the circle, the last at 0 (the input view)."""
    import numpy as np

    return [float(a) for a in np.linspace(0, 360, frames + 1)[1:] % 360]


def camera_vector(augmentation: float, elevations: list[float], azimuths: list[float]) -> torch.Tensor:
    """sv3d_p's conditioning vector of each frame (frames, 1280), as sgm's conditioner makes it from the script's
    values: the augmentation, the polar angles and the azimuths relative to the last frame's."""
    import numpy as np
    import torch

    polars = [float(np.deg2rad(90 - e)) for e in elevations]
    relative = [float(np.deg2rad((a - azimuths[-1]) % 360)) for a in azimuths]
    columns = ([augmentation] * len(azimuths), polars, relative)
    return torch.cat([sinusoids(values, width) for values, width in zip(columns, CAMERA_WIDTHS, strict=True)], dim=1)


@contextlib.contextmanager
def per_frame_embedding(unet: Any, embedding: torch.Tensor) -> Iterator[None]:
    """Run `unet` with `embedding` (batch x frames, D), one row per frame, as its added embedding: diffusers' forward
    adds one per video (from `added_time_ids`), so that one is zeroed and each block's `temb` (the timestep's
    embedding, repeated per frame) gets each frame's row added."""
    import torch

    def no_video_embedding(module, args, output):
        return torch.zeros_like(output)

    def add_frames(module, args, kwargs):
        return args, {**kwargs, "temb": kwargs["temb"] + embedding.to(kwargs["temb"].dtype)}

    handles = [unet.add_embedding.register_forward_hook(no_video_embedding)]
    for block in (*unet.down_blocks, unet.mid_block, *unet.up_blocks):
        handles.append(block.register_forward_pre_hook(add_frames, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def triangle(frames: int, low: float, high: float) -> list[float]:
    """sgm's TrianglePredictionGuider scales (period 1): `low` at both ends, `high` half way, linear between."""
    values = [i / (frames - 1) for i in range(frames)] if frames > 1 else [0.0]
    return [low + (high - low) * 2 * abs(v - int(v + 0.5)) for v in values]


def recentred(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The script's preparation of an RGBA picture: the bounding box of its visible pixels (alpha > 0) centred in
    a transparent square whose side is the picture's height (never smaller than the box here, where the script
    would fail), resized with Lanczos, then put on white."""
    import numpy as np
    from PIL import Image

    pixels = np.array(image)
    rows, columns = np.nonzero(pixels[..., 3] > 0)
    top, left = rows.min(), columns.min()
    height, width = rows.max() - top + 1, columns.max() - left + 1
    side = max(pixels.shape[0], height, width)
    square = np.zeros((side, side, 4), dtype=np.uint8)
    centre = side // 2
    square[centre - height // 2 : centre - height // 2 + height, centre - width // 2 : centre - width // 2 + width] = (
        pixels[top : top + height, left : left + width]
    )
    rgba = np.asarray(Image.fromarray(square).resize(size, Image.LANCZOS)) / 255.0
    rgb = rgba[..., :3] * rgba[..., -1:] + (1 - rgba[..., -1:])
    return Image.fromarray((rgb * 255).astype(np.uint8))


@functools.cache
def sv3d_pipeline_class(name: str = "SV3DPipeline") -> type:
    """The diffusers pipeline class of an SV3D folder (its model_index.json names it): SVD's pipeline, whose
    components it holds, under the family's own name so that a folder says which family it is. Made on first
    use, so that diffusers is imported only when a model loads."""
    from diffusers import StableVideoDiffusionPipeline

    return type(name, (StableVideoDiffusionPipeline,), {"__module__": __name__})


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
        # Stability's script puts the input picture in place of the last frame, so an end picture would be lost.
        "end": "its last frame is the input view itself",
        "keyframes": "its last frame is the input view itself",
        "elevation": "sv3d_u takes no camera (sv3d-p does)",
        "azimuths": "sv3d_u takes no camera (sv3d-p does)",
    }
    builtin = "tiny-sv3d"
    pipelines = ("SV3DPipeline",)
    autoencoder = "AutoencoderKL"  # its decoder runs frame by frame

    def pipeline_class(self) -> type:
        return sv3d_pipeline_class(self.pipelines[0])

    def folder_defaults(self, folder) -> dict[str, Any]:
        return dict(self.defaults)

    def prepare_picture(self, image: Image.Image, size: tuple[int, int]) -> Image.Image | None:
        """A picture with transparency (an object cut out) recentred as the script does; any other: svd's fit."""
        import numpy as np

        if "A" not in image.getbands():
            return None
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() == 255 or alpha.max() == 0:  # opaque, or nothing in it
            return None
        return recentred(image.convert("RGBA"), size)

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


class SV3DP(SV3D):
    """sv3d_p: SV3D with each frame's camera (elevation, azimuth) in its conditioning vector."""

    name = "sv3d-p"
    refused = {key: why for key, why in SV3D.refused.items() if key not in ("elevation", "azimuths")}
    builtin = "tiny-sv3d-p"
    pipelines = ("SV3DPPipeline",)

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
        """sv3d_u's conditioning, and each frame's camera vector (`camera`)."""
        conditioning = super().condition(model, image, settings, generator, use=use, encode_latents=encode_latents)
        inputs = conditioning.inputs
        vector = camera_vector(settings.noise_aug, *camera_path(settings))
        inputs["camera"] = vector[None].to(model.device, model.unet.dtype)
        # The ids diffusers' forward embeds into its one added embedding per video, which per_frame_embedding
        # zeroes: as many as make the vector's width.
        ids = inputs["added_time_ids"]
        inputs["added_time_ids"] = ids.new_zeros(ids.shape[0], sum(CAMERA_WIDTHS) // CAMERA_WIDTHS[0])
        return conditioning

    def unconditional(
        self, conditioning: Conditioning, settings: GenerationSettings, always: bool = False
    ) -> Conditioning | None:
        """SVD's (zeroed CLIP embedding and image latents); the camera vector is the same in both halves, as sgm's
        unconditional batch is a copy of the conditional one but for those two."""
        unconditional = super().unconditional(conditioning, settings, always)
        if unconditional is not None:
            unconditional.inputs["camera"] = conditioning.inputs["camera"]
        return unconditional

    def denoise(self, unet: Any, latents: torch.Tensor, timestep: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        embedding = unet.add_embedding(inputs.pop("camera").flatten(0, 1))
        with per_frame_embedding(unet, embedding):
            return super().denoise(unet, latents, timestep, **inputs)

    def check_settings(self, settings: GenerationSettings) -> tuple[str, str] | None:
        frames = settings.frames
        if settings.elevation is not None and len(settings.elevation) not in (1, frames):
            return "elevation", f"one elevation for every frame or one for each of its {frames} frames"
        if settings.azimuths is not None and len(settings.azimuths) != frames:
            return "azimuths", f"one azimuth for each of its {frames} frames (or the count {frames})"
        return None


def camera_path(settings: GenerationSettings) -> tuple[list[float], list[float]]:
    """The elevation and azimuth of every frame, in degrees (checked by SV3DP.check_settings): the settings' (one
    elevation for all frames, or one each), else the script's orbit."""
    elevations = list(settings.elevation or [ELEVATION])
    azimuths = list(settings.azimuths or orbit_azimuths(settings.frames))
    return elevations * settings.frames if len(elevations) == 1 else elevations, azimuths
