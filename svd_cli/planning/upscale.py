"""The upscale stage's device memory, measured on fake tensors: why each profile has the tile size it has.

`simulate_upscale` runs the tiled upscale (models/upscaler.py `upscale_tiled`, the code a real run uses) of
one frame with spandrel's RRDBNet at Real-ESRGAN x2plus's full size under the GPU simulation of simulate.py:
fake tensors, "meta" playing the GPU, every live device byte counted. The weights are moved onto the device
inside the count, as `load_upscaler` moves them, so the peak is weights + input + blend buffers + the largest
tile's activations. spandrel's descriptor pads a tile to its size requirement, runs the network and clamps
to [0, 1]; the simulation calls the network and clamps (tiles and frames here already meet the requirement).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..models.upscaler import FACTOR, NETWORKS, build_upscaler_network, upscale_tiled
from .simulate import _simulated, _torch_dtype


@dataclass(frozen=True)
class UpscaleSimulation:
    tile: int | None
    width: int
    height: int
    peak_bytes: int  # live device bytes: weights, frame, blend buffers and one tile's activations
    weights_bytes: int
    tiles: int
    seconds: float
    flops: int = 0  # of the blocks run, for one frame


def simulate_upscale(
    tile: int | None,
    width: int = 1024,
    height: int = 576,
    network: str = "realesrgan-x2",
    dtype: str = "fp16",
    blocks: int | None = None,
) -> UpscaleSimulation:
    """Peak device bytes of upscaling one `width` x `height` frame in tiles of `tile` input pixels.

    `blocks`: run only that many of the network's residual blocks and add the other blocks' weights to the
    peak (a fraction of the time). Every block has the same shapes and frees its activations before the next
    one runs, so the peak differs only by those weights (tests/test_upscale.py checks it against the full run).
    """
    import torch
    from torch import nn
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    started = time.perf_counter()
    torch_dtype = _torch_dtype(dtype)
    calls = []

    def run_network(image):
        calls.append(image.shape)
        return net(image).clamp_(0, 1)

    with _simulated(math_attention=False) as counter:
        with counter.ignore():  # weights waiting in host memory: fake CPU tensors, not counted
            with unset_fake_temporarily(), torch.device("meta"):
                full = build_upscaler_network(network)
                net = build_upscaler_network(network, num_blocks=blocks) if blocks else full
                left_out = _bytes(full, torch_dtype) - _bytes(net, torch_dtype)
            for module in net.modules():
                for name, p in list(module._parameters.items()):
                    if p is not None:
                        empty = torch.empty(p.shape, dtype=torch_dtype, device="cpu")
                        module._parameters[name] = nn.Parameter(empty, requires_grad=False)
        net.to("meta")  # load_upscaler's move onto the device: counted
        frame = torch.empty((1, 3, height, width), dtype=torch.uint8, device="cpu").to("meta")
        image = frame.to(torch_dtype) / 255
        del frame
        result = upscale_tiled(run_network, image, FACTOR, tile)
        pixels = (result[0].permute(1, 2, 0).float() * 255).round_().clamp_(0, 255).to(torch.uint8)
        del result, pixels
    seconds = round(time.perf_counter() - started, 2)
    peak = counter.peak + left_out
    return UpscaleSimulation(tile, width, height, peak, _bytes(full, torch_dtype), len(calls), seconds, counter.flops)


def _bytes(network, dtype) -> int:
    """The network's parameters at `dtype`."""
    return sum(p.numel() for p in network.parameters()) * dtype.itemsize


def upscale_cost(tile: int | None, width: int, height: int, network: str, dtype: str) -> tuple[int, int]:
    """(peak device bytes, FLOPs) of upscaling one frame with the whole `network`, from two short runs: the
    residual blocks all have the same shapes, so one more block adds the same work (and frees its activations
    before the next, so the peak of a short run plus the other blocks' weights is the whole run's)."""

    blocks = NETWORKS[network]["num_blocks"]
    if blocks <= 2:
        whole = simulate_upscale(tile, width, height, network, dtype)
        return whole.peak_bytes, whole.flops
    one = simulate_upscale(tile, width, height, network, dtype, blocks=1)
    two = simulate_upscale(tile, width, height, network, dtype, blocks=2)
    return two.peak_bytes, one.flops + (two.flops - one.flops) * (blocks - 1)
