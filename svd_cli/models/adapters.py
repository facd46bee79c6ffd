"""Model adapters of the kinds that are not a video family: each shows its components to the rest of svd by role.

The memory engine (placement, offload, the estimate) and the generation stages ask an adapter for its
`components` by role (the conditioning encoders, the denoiser, the decoder), never for a diffusers attribute
name. A video family's adapter lives in its module (families/svd.py: `SVDAdapter`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelLoadError, ref
from .quiet import quiet_transformers

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .sources import ModelSource


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


# The adapters of the kinds that are not a video family (each family gives its own: families/).
ADAPTERS = {"text-to-image": TextToImageAdapter}
