"""Model adapters: each kind of model builds its components and shows them to the rest of svd by role.

The memory engine (placement, offload, the estimate) and the generation stages ask an adapter for its
`components` by role (the conditioning encoders, the denoiser, the decoder) and for the few operations that
differ between model families, never for a diffusers attribute name. `SVDAdapter` is the Stable Video
Diffusion family; a new family (AnimateLCM's sampler, a single-file checkpoint's converted weights) is a
new adapter or a new way to build this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelLoadError, ref
from .quiet import quiet_transformers

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .sources import ModelSource


class SVDAdapter:
    """Stable Video Diffusion: CLIP image encoder, VAE (encoder and temporal decoder), spatio-temporal UNet."""

    kind = "svd"

    def __init__(self, source: ModelSource, pipe, device: torch.device, dtype: torch.dtype):
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
        the consistency sampler of AnimateLCM-SVD (samplers.py).
        """
        if sampler == "animatelcm":
            from .samplers import AnimateLCMSampler

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


def _no_pipeline_watermark(pipe) -> None:
    """Turn off the watermark diffusers' SDXL pipelines add to the still whenever invisible-watermark is installed.

    svd marks the finished video itself (stages/watermark.py) when asked to; the still is only the model's input.
    diffusers' mark would ignore the user's choice, differ between machines with and without the package, and
    fails on stills at least 256 wide but under 256x256 pixels in area.
    """
    if getattr(pipe, "watermark", None) is not None:
        pipe.watermark = None


class TextToImageAdapter:
    """A text-to-image model (SDXL-Turbo, tiny-t2i, any diffusers text-to-image pipeline): the first frame
    from a prompt, or a photo restyled by an image-to-image pass over the same components.

    It runs diffusers' own pipelines (`AutoPipelineForText2Image`, and `AutoPipelineForImage2Image.from_pipe`
    on the same weights), always with a CPU generator so a seed gives the same still on every device.
    """

    kind = "text-to-image"

    def __init__(self, source: ModelSource, pipe, device: torch.device, dtype: torch.dtype):
        self.source = source
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self._img2img = None
        pipe.set_progress_bar_config(disable=True)
        _no_pipeline_watermark(pipe)

    @property
    def img2img(self):
        """The image-to-image pipeline on the same components (made on first use: prompts never need it)."""
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                with quiet_transformers():
                    self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            except ValueError as exc:
                raise ModelLoadError(
                    f"{self.source.name} ({type(self.pipe).__name__}) has no image-to-image pipeline in diffusers, so "
                    f"it cannot restyle photos: choose another {ref('image_model')}.",
                    model=self.source.name,
                ) from exc
            self._img2img.set_progress_bar_config(disable=True)
            _no_pipeline_watermark(self._img2img)
        return self._img2img

    def text_encoders(self) -> list[nn.Module]:
        return [m for m in (getattr(self.pipe, "text_encoder", None), getattr(self.pipe, "text_encoder_2", None)) if m]

    def components(self) -> dict[str, nn.Module]:
        from torch import nn

        return {"text_encoder": nn.ModuleList(self.text_encoders()), "denoiser": self.pipe.unet,
                "decoder": self.pipe.vae}  # fmt: skip

    def role_bytes(self) -> dict[str, int]:
        def nbytes(module) -> int:
            return sum(p.numel() * p.element_size() for p in module.parameters())

        return {"encoder": sum(nbytes(m) for m in self.text_encoders()), "denoiser": nbytes(self.pipe.unet),
                "autoencoder": nbytes(self.pipe.vae)}  # fmt: skip

    @property
    def denoiser_base_channels(self) -> int:
        return self.pipe.unet.config.block_out_channels[0]

    @property
    def decoder_base_channels(self) -> int:
        return self.pipe.vae.config.block_out_channels[0]

    @property
    def max_tokens(self) -> int:
        """How many tokens (with the start and end tokens) the text encoder reads; the rest of a prompt is cut."""
        return int(self.pipe.tokenizer.model_max_length)

    def token_count(self, text: str) -> int:

        with quiet_transformers():  # "longer than the maximum" is what we are asking about
            return len(self.pipe.tokenizer(text, truncation=False).input_ids)

    def place(self, offload: str) -> None:
        """Where the weights live while drawing: on the device, or offloaded (diffusers' own offload)."""
        if self.device.type == "cpu" or offload == "none":
            self.pipe.to(self.device)
        elif offload == "model":
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            self.pipe.enable_sequential_cpu_offload(device=self.device)

    def draw(self, prompt: str, negative: str, steps: int, cfg: float, size: tuple[int, int], seed: int, progress):
        """A still of `size` (width, height) for `prompt` (a prompt past the text encoder's limit is cut there)."""
        import torch

        with torch.no_grad(), quiet_transformers():
            return self.pipe(
                prompt=prompt, negative_prompt=negative or None, num_inference_steps=steps, guidance_scale=cfg,
                width=size[0], height=size[1], generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=_advance(progress),
            ).images[0]  # fmt: skip

    def restyle(self, image, prompt: str, negative: str, steps: int, cfg: float, strength: float, seed: int,
                progress):  # fmt: skip
        """`image` redrawn towards `prompt`: `strength` of the `steps` are run from a noised copy of it."""
        import torch

        with torch.no_grad(), quiet_transformers():
            return self.img2img(
                prompt=prompt, image=image, negative_prompt=negative or None, num_inference_steps=steps,
                guidance_scale=cfg, strength=strength, generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=_advance(progress),
            ).images[0]  # fmt: skip


def _advance(progress):
    def callback(pipe, step, timestep, tensors):
        progress.advance()
        return tensors

    return callback


ADAPTERS = {"svd": SVDAdapter, "text-to-image": TextToImageAdapter}
