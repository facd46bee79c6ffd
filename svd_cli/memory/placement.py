"""Where each component's weights live while a video is made: resident, model, streamed or sequential offload.

- none: every component stays on the device (fastest).
- model: components wait on the CPU and move to the device only for the step that uses them (the image
  encoder for step 2, the denoiser for denoising, the decoder for decoding), like diffusers' model CPU offload. Costs
  one host-device copy of each component per video.
- stream: the denoiser's weights stay on the CPU and stream to the device layer by layer, the next layer's
  copied on a second CUDA stream while the current one computes (diffusers' group offloading, leaf level, with
  streams); the other components move whole, as in model offload. The denoiser takes one layer's weights
  (and the next one's, in flight) instead of all of them, and on a card whose compute per step outlasts
  copying the denoiser's weights twice over the bus (every consumer card on PCIe 4.0), no time is lost.
  The weights wait in pinned host memory, copied there once. Without CUDA streams (the CPU, Apple's GPUs)
  each layer's weights are copied before it runs, as in sequential offload.
- sequential: weights stay on the CPU and stream to the device layer by layer as each layer runs
  (accelerate's `cpu_offload`), for 4 GB cards. Slow: the UNet's weights cross the bus at every step. The
  VAE's encoder and decoder (about 0.1 GB each in fp16) move whole instead: tiled VAE passes call each layer
  many times, and streaming would copy its weights every time.
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


class Placement:
    """Moves model components to the execution device when a generation step needs them."""

    def __init__(self, components: dict[str, nn.Module], device: torch.device, mode: str):
        """`components` by role (a model adapter's `components()`), in the order a video uses them."""
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"offload mode {mode!r} is not one of {OFFLOAD_MODES}")
        self.components = components
        self.device = device
        self.mode = mode
        self._hooked: list[nn.Module] = []  # under accelerate's offload hooks
        self._grouped: list[nn.Module] = []  # under diffusers' group offloading hooks
        self._resident: set[str] = set()

    def apply(self) -> None:
        """Put every component where this mode wants it before the first video."""
        cpu = torch.device("cpu")
        if self.mode == "none":
            for name, module in self.components.items():
                module.to(self.device)
                self._resident.add(name)
        elif self.mode == "model":
            for module in self.components.values():
                module.to(cpu)
        elif self.mode == "stream":
            from diffusers.hooks import apply_group_offloading

            for name, module in self.components.items():
                module.to(cpu)
                if name in STREAMED:
                    apply_group_offloading(module, onload_device=self.device, offload_type="leaf_level",
                                           use_stream=has_streams(self.device))  # fmt: skip
                    self._grouped.append(module)
        else:
            from accelerate import cpu_offload

            for name, module in self.components.items():
                if name in MOVED_WHOLE:
                    module.to(cpu)  # small; moved whole (the encoder is upcast to fp32 for encoding)
                    continue
                module.to(cpu)
                cpu_offload(module, execution_device=self.device)
                self._hooked.append(module)

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[nn.Module]:
        """Make component `name` runnable on the device for the duration of the block."""
        module = self.components[name]
        moved_whole = {"model": True, "stream": name not in STREAMED, "sequential": name in MOVED_WHOLE}
        if moved_whole.get(self.mode, False) or self.mode == "stream":  # a streamed denoiser needs the room too
            for other, m in self.components.items():
                if other != name and other in self._resident:
                    m.to("cpu")
                    self._resident.discard(other)
        if moved_whole.get(self.mode, False):
            module.to(self.device)
            self._resident.add(name)
        yield module

    def release(self) -> None:
        """Undo offload hooks and bring every component back to the CPU (before re-planning)."""
        from accelerate.hooks import remove_hook_from_module
        from diffusers.hooks import HookRegistry

        for module in self._hooked:
            remove_hook_from_module(module, recurse=True)
        self._hooked.clear()
        for module in self._grouped:
            registry = HookRegistry.check_if_exists_or_initialize(module)
            for hook in GROUP_OFFLOAD_HOOKS:
                registry.remove_hook(hook, recurse=True)
        self._grouped.clear()
        for module in self.components.values():
            module.to("cpu")
        self._resident.clear()
