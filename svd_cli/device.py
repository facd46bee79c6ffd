"""Device helpers every layer may use (the lowest module that knows about accelerators)."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def free_memory(device: torch.device) -> None:
    """Give the memory of tensors no longer referenced back to the device, for the next model that needs it."""
    import torch  # only callers that already hold a torch device get here

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
