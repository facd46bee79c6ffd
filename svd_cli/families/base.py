"""What a model family is to the denoising loop: how it conditions, guides and calls its denoiser.

`Animator.__call__` (stages/animate.py) names no family: it asks the model's family for the conditioning of a
picture, the shape of the latents, the guidance per frame, the unconditional inputs and one denoiser call, and
runs the rest (timesteps, noise, CFG batching or splitting, step hooks, decoding) the same way for every family.
A family is one module here and one entry in `FAMILIES` (__init__.py).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..options import GenerationSettings

# What the Animator lends a family to encode the picture under the memory plan: `use(role)` puts a component on
# the device for the `with` block; `encode_latents(pixels)` is the VAE encoder's latents (tiled if the plan says).
UseComponent = Callable[[str], AbstractContextManager]
EncodeLatents = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass
class Conditioning:
    """What the family's denoiser sees besides the noisy latents and the timestep, made once per video.

    `inputs` are keyword arguments of the family's `denoise`, each a tensor whose first axis is the batch (so
    the loop can run the conditional and unconditional halves as one batch); only the family reads them.
    """

    inputs: dict[str, torch.Tensor]


class Family(Protocol):
    """A model family: the `kind` of its registry entries and model folders, and what its denoising needs."""

    name: str

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

    def guidance(self, settings: GenerationSettings, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The guidance scale, per frame, broadcastable to the latents."""
        ...

    def unconditional(self, conditioning: Conditioning, settings: GenerationSettings) -> Conditioning | None:
        """The inputs of the unconditional half of classifier-free guidance; None when the video is unguided."""
        ...

    def denoise(self, unet: Any, latents: torch.Tensor, timestep: torch.Tensor, **inputs: torch.Tensor):
        """One denoiser call: the noise prediction for the (scaled) latents at `timestep`."""
        ...
