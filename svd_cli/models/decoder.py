"""Tiny decoders: TAESD's decoder of Stable Diffusion's latent space, which SVD's UNet works in, for drafts.

The file is madebyollin/taesd's `taesd_decoder.safetensors`: the state dict of TAESD's own `Decoder`, a
sequence of layers whose first (a clamp) has no weights. diffusers' `AutoencoderTiny` (default config: TAESD's)
holds the same layers as `decoder.layers`, without the clamp, which its forward applies itself; so the file's
key `N.rest` is `layers.{N-1}.rest` there, the mapping diffusers' scripts/convert_tiny_autoencoder_to_diffusers.py
applies. TAESD's latent scale is 1: it decodes the UNet's latents as they are, each frame on its own, to
[-1, 1] like the VAE's decoder (diffusers' `DecoderTiny.forward`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import ModelLoadError, first_line, ref
from .post import PostModel, check_loadable

if TYPE_CHECKING:
    import torch
    from torch import nn

PREVIEW_HALF_FROM = 64  # latent width (512 pixels) from which a preview decodes its latents pooled to half size


def preview_latent_size(height: int, width: int) -> tuple[int, int]:
    """The latent size a live preview decodes for latents of `height` x `width`: half from PREVIEW_HALF_FROM on
    (a quarter of the decoding work; the preview is shown small anyway)."""
    return (height // 2, width // 2) if width >= PREVIEW_HALF_FROM else (height, width)


def to_diffusers(state: dict) -> dict:
    """TAESD's Decoder keys ("3.conv.0.weight") as diffusers' `DecoderTiny` names them ("layers.2.conv.0.weight")."""
    renamed = {}
    for key, tensor in state.items():
        index, _, rest = key.partition(".")
        if not index.isdigit() or not rest:
            raise KeyError(key)
        renamed[f"layers.{int(index) - 1}.{rest}"] = tensor
    return renamed


def to_taesd(state: dict) -> dict:
    """The inverse of `to_diffusers`: how TAESD's own files name a `DecoderTiny`'s weights."""
    return {f"{int(key.split('.')[1]) + 1}.{key.split('.', 2)[2]}": tensor for key, tensor in state.items()}


def new_decoder() -> nn.Module:
    """TAESD's decoder architecture (diffusers' `AutoencoderTiny` default config), randomly initialised."""
    from diffusers import AutoencoderTiny

    return AutoencoderTiny().decoder


def decode_each(decoder: PostModel, latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """The pixels ([-1, 1], float32) of each frame of `latents` (frames, channels, h, w), one decoder call each, as
    TAESD decodes: one frame has no neighbours to look at, and its activations stay small."""
    for frame in latents.split(1):
        yield decoder.network(frame.to(decoder.device, decoder.dtype)).float()


def load_tiny_decoder(source, dtype: torch.dtype) -> PostModel:
    """Read a tiny decoder file (a resolved `ModelSource` of kind "decoder") onto the CPU in `dtype`."""
    from safetensors.torch import load_file

    path = check_loadable(source, "decoder")
    decoder = new_decoder()
    try:
        decoder.load_state_dict(to_diffusers(load_file(str(path))), strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{ref('decoder')} {path}: not TAESD's decoder ({type(exc).__name__}: {first_line(exc)[:160]}); choose "
            "taesd's taesd_decoder.safetensors, or full.",
            path=path,
        ) from None
    decoder.to(dtype).eval().requires_grad_(False)
    name = source.name if source.entry is not None else str(path)
    return PostModel(name, path, decoder, _cpu(), dtype, (source.single_file or {}).get("sha256"))


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")
