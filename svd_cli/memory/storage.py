"""Saver: the UNet's weights stored in fp8 (float8_e4m3fn), each layer cast to the run's dtype while it runs.

diffusers' layerwise casting (`ModelMixin.enable_layerwise_casting`) keeps every layer's weights in the storage
dtype and casts them to the compute dtype just before the layer runs (and back after), leaving the layers its
skip list names (norms, embeddings, position encodings) in the compute dtype, where rounding would hurt most.
The UNet's fp16 weights (2.84 GiB for SVD-XT) take about half; the arithmetic stays in the run's dtype, so the
frames change only by the rounding of the weights to fp8's 3 mantissa bits. Cards with fp8 support (Ada,
Hopper) and older ones cast the same way: it saves memory, not time (each layer's cast is extra work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def store_weights(unet, storage: str, compute_dtype: torch.dtype) -> None:
    """Keep `unet`'s weights as `storage` (one of options.WEIGHT_STORAGE) says: "full" leaves them as they are."""
    if storage == "full":
        return
    import torch

    unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)


def stored_in_fp8(unet) -> bool:
    """Whether `unet`'s weights are kept in fp8 (its compute dtype is then fixed by the casting hooks)."""
    import torch

    return any(parameter.dtype == torch.float8_e4m3fn for parameter in unet.parameters())
