"""Where each component's weights live while a video is made: resident, model, streamed or sequential offload.

- none: every component stays on the device (fastest).
- model: components wait on the CPU and move to the device only for the step that uses them (the image
  encoder for step 2, the denoiser for denoising, the decoder for decoding), like diffusers' model CPU offload. Costs
  one host-device copy of each component per video.
- stream: the denoiser moves layer by layer (below); the other components move whole, as in model offload.
  The denoiser takes one layer's weights (and the next one's, in flight) instead of all of them.
- sequential: every component moves layer by layer, for 4 GB cards, but the VAE's encoder and decoder (about
  0.1 GB each in fp16), which move whole: tiled VAE passes call each layer many times, and moving it layer by
  layer would copy its weights every time.

Layer by layer is diffusers' group offloading at leaf level: the weights wait in host memory (pinned, copied
there once) and each layer's are copied to the device when it runs and dropped after. On CUDA the next layer's
copy runs on a second stream while the current layer computes, so a card whose compute per step outlasts
copying the UNet's weights twice over the bus (every consumer card on PCIe 4.0) loses no time to it. Without
CUDA streams (the CPU, Apple's GPUs) each layer's weights are copied before it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

OFFLOAD_MODES = ("none", "model", "stream", "sequential")
MOVED_WHOLE = ("vae_encoder", "decoder")  # under sequential offload; the roles of `components()`
STREAMED = ("denoiser",)  # under streamed offload; the others move whole
# diffusers' names of the hooks group offloading registers (hooks/group_offloading.py), removed on release.
GROUP_OFFLOAD_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


def has_streams(device: torch.device) -> bool:
    """Whether copies to `device` can run on a stream of their own, beside the computation: CUDA, and "meta",
    the simulated CUDA GPU of `svd plan` (planning/simulate.py)."""
    return device.type in ("cuda", "meta")


def layer_by_layer(mode: str, name: str) -> bool:
    """Whether offload `mode` moves component `name` layer by layer (else whole, or not at all)."""
    return (mode == "stream" and name in STREAMED) or (mode == "sequential" and name not in MOVED_WHOLE)


class Placement:
    """Moves model components to the execution device when a generation step needs them."""

    def __init__(self, components: dict[str, nn.Module], device: torch.device, mode: str):
        """`components` by role (a model adapter's `components()`), in the order a video uses them."""
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"offload mode {mode!r} is not one of {OFFLOAD_MODES}")
        self.components = components
        self.device = device
        self.mode = mode
        self._grouped: list[nn.Module] = []  # under diffusers' group offloading hooks
        self._resident: set[str] = set()

    def apply(self) -> None:
        """Put every component where this mode wants it before the first video."""
        if self.mode == "none":
            for name, module in self.components.items():
                module.to(self.device)
                self._resident.add(name)
            return
        from diffusers.hooks import apply_group_offloading

        for name, module in self.components.items():
            module.to("cpu")
            if layer_by_layer(self.mode, name):
                apply_group_offloading(module, onload_device=self.device, offload_type="leaf_level",
                                       use_stream=has_streams(self.device))  # fmt: skip
                self._grouped.append(module)

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[nn.Module]:
        """Make component `name` runnable on the device for the duration of the block: under offload, the
        components moved whole make room, and `name` moves in whole unless its layers move one by one."""
        module = self.components[name]
        if self.mode != "none":
            for other, m in self.components.items():
                if other != name and other in self._resident:
                    m.to("cpu")
                    self._resident.discard(other)
            if not layer_by_layer(self.mode, name):
                module.to(self.device)
                self._resident.add(name)
        yield module

    def release(self) -> None:
        """Undo offload hooks and bring every component back to the CPU (before re-planning)."""
        from diffusers.hooks import HookRegistry

        for module in self._grouped:
            registry = HookRegistry.check_if_exists_or_initialize(module)
            for hook in GROUP_OFFLOAD_HOOKS:
                registry.remove_hook(hook, recurse=True)
        self._grouped.clear()
        for module in self.components.values():
            module.to("cpu")
        self._resident.clear()
