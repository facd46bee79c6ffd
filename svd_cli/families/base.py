"""What a model family is: how svd recognises, loads and defaults its models, and how it denoises.

The loaders (models/) ask a family which diffusers pipeline classes it reads, which weight files a folder of it
holds, the defaults of its settings and the adapter that shows its components by role. `VideoModel.__call__`
(stages/animate.py) names no family: it asks the model's family for the conditioning of a picture, the shape of
the latents (and a still picture's, for a mask), the guidance per frame, the unconditional inputs and one
denoiser call, and runs the rest (timesteps, noise, CFG batching or splitting, step hooks, decoding) the same way
for every family.
A family is one module here and one entry in `FAMILIES` (__init__.py); it imports nothing else of svd_cli, so
every layer (the option schema included) may ask it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

# What the VideoModel lends a family to encode the picture under the memory plan: `use(role)` puts a component on
# the device for the `with` block; `encode_latents(pixels)` is the VAE encoder's latents (tiled if the plan says).
UseComponent = Callable[[str], AbstractContextManager]
EncodeLatents = Callable[["torch.Tensor"], "torch.Tensor"]


class GenerationSettings(Protocol):
    """The settings of one video as a family reads them (options.GenerationSettings; a family's own options are
    attributes too)."""

    frames: int
    width: int
    height: int
    sampler: str


@dataclass
class Conditioning:
    """What the family's denoiser sees besides the noisy latents and the timestep, made once per video.

    `inputs` are keyword arguments of the family's `denoise`, each a tensor whose first axis is the batch (so
    the loop can run the conditional and unconditional halves as one batch); only the family reads them.
    """

    inputs: dict[str, torch.Tensor]


class Family(Protocol):
    """A video model family: the `family` of its registry entries, how its folders are recognised, and what its
    denoising needs."""

    name: str
    # The default of every generation setting its models decide (options.GENERATION; "size" as (width, height)),
    # for a model with no registry entry; an entry in weights.toml may change them.
    defaults: dict[str, Any]
    # The generation settings its models do not take, each with why: given one, a run stops with a usage error.
    refused: dict[str, str]
    # The registry name of its built-in model (built offline for the tests), or None.
    builtin: str | None
    # The `_class_name`s of model_index.json that mark a diffusers folder as this family's.
    pipelines: tuple[str, ...]
    # Component folder -> file stem of its weights ("unet": "diffusion_pytorch_model"): what a folder must hold
    # and what a download fetches (one safetensors file per component, with every config).
    components: dict[str, str]

    def pipeline_class(self) -> type:
        """The diffusers pipeline class that reads a folder of this family (`from_pretrained`)."""
        ...

    def adapter(self, source: Any, pipe: Any, device: torch.device, dtype: torch.dtype) -> Any:
        """The loaded pipeline behind the adapter the memory engine and the animate stage use (SVDAdapter's
        interface: `components()` by role, `unet`, `vae`, `new_scheduler`, `scaling_factor`, ...)."""
        ...

    def build_components(self, configs: dict[str, dict]) -> dict[str, Any]:
        """Each weight component (by its folder in `components`) made from its config, with the weights the
        default device gives it: random ones for the built-in model and `svd bench`, none on "meta" (the
        simulator fakes them)."""
        ...

    def assemble(self, components: dict[str, Any], scheduler: dict[str, Any]) -> Any:
        """The family's diffusers pipeline around built `components`, its scheduler made from the `scheduler`
        config (the simulator then runs it on fake tensors)."""
        ...

    def folder_defaults(self, folder: Path) -> dict[str, Any]:
        """The defaults of a folder with no registry entry (`defaults`, with what its configs say)."""
        ...

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
        """The conditioning of `image` (drawing any noise it needs from `generator`, before the latents')."""
        ...

    def latent_shape(self, model: Any, settings: GenerationSettings) -> tuple[int, ...]:
        """The shape of the latents the loop denoises."""
        ...

    def clean_latents(
        self,
        model: Any,
        pictures: list[Image.Image],
        settings: GenerationSettings,
        *,
        use: UseComponent,
        encode_latents: EncodeLatents,
    ) -> torch.Tensor:
        """The clean latents of a video whose frames are `pictures` (one picture: every frame), (1, frames or 1,
        ...), broadcastable to the latents: what a mask keeps outside its region. It draws no noise."""
        ...

    def guidance(self, settings: GenerationSettings, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The guidance scale, per frame, broadcastable to the latents."""
        ...

    def unconditional(
        self, conditioning: Conditioning, settings: GenerationSettings, always: bool = False
    ) -> Conditioning | None:
        """The inputs of the unconditional half of classifier-free guidance; None when the video is unguided, unless
        `always` (a sampler that steps along the unconditional estimate needs it at any scale)."""
        ...

    def prepare_picture(self, image: Image.Image, size: tuple[int, int]) -> Image.Image | None:
        """The input picture at `size` as the family's reference script prepares it, or None for svd's own fit
        (the fit and background settings)."""
        ...

    def check_settings(self, settings: GenerationSettings) -> tuple[str, str] | None:
        """What is wrong with a video's settings for this family, as (setting, what it needs instead), or None."""
        ...

    def output_frames(self, frames: np.ndarray, image: Image.Image) -> np.ndarray:
        """The decoded frames (F, H, W, 3) as the video shows them (SV3D shows its input view as the picture
        itself); uint8, or float in [0, 1]."""
        ...

    def denoise(self, unet: Any, latents: torch.Tensor, timestep: torch.Tensor, **inputs: torch.Tensor):
        """One denoiser call: the noise prediction for the (scaled) latents at `timestep`."""
        ...
