"""The upscale post stage's model: a 2x super-resolution network read from one safetensors file by spandrel.

spandrel recognises the architecture (Real-ESRGAN, ESRGAN, SwinIR, ...) from the tensors' names and shapes,
so any such file works, the registry's `realesrgan-x2` and the built-in `tiny-upscaler` alike; both come
through `load_upscaler`. Frames are upscaled in overlapping tiles whose outputs are blended with weights that
ramp across the overlap, so a tile size (memory/profiles.py UPSCALE_TILES) bounds the device memory without
seams. `release` gives the device memory back before the next video's UNet needs it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, first_line, ref
from ..progress import NullProgress, Progress
from .post import PostModel, check_loadable

if TYPE_CHECKING:
    import numpy as np
    import torch

FACTOR = 2  # the only scale the upscale stage offers
OVERLAP = 16  # input pixels two neighbouring tiles share; their outputs are blended across it

# spandrel's ESRGAN (RRDBNet) hyperparameters. Real-ESRGAN x2plus (xinntao) feeds a 2x pixel-unshuffled image
# (12 channels) to a 4x network: 2x in all. The tiny one has that layout with 1 block and 8 features.
NETWORKS: dict[str, dict[str, Any]] = {
    "realesrgan-x2": {"in_nc": 12, "out_nc": 3, "num_filters": 64, "num_blocks": 23, "scale": 4, "shuffle_factor": 2},
    "tiny-upscaler": {"in_nc": 12, "out_nc": 3, "num_filters": 8, "num_blocks": 1, "scale": 4, "shuffle_factor": 2},
}


def build_upscaler_network(name: str, seed: int | None = None, **changes) -> torch.nn.Module:
    """spandrel's ESRGAN network with the hyperparameters of `name` (and `changes`), random weights from `seed`."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    if seed is not None:
        torch.manual_seed(seed)
    return ESRGAN(**(NETWORKS[name] | changes)).eval().requires_grad_(False)


class Upscaler(PostModel):
    """A loaded super-resolution model on a device, ready to enlarge clips' frames."""

    descriptor = property(lambda self: self.network)  # spandrel's ImageModelDescriptor: pads, runs, clamps to [0, 1]

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    def upscale(self, frames: np.ndarray, tile: int | None, progress: Progress | None = None) -> np.ndarray:
        """(F, H, W, 3) uint8 -> (F, 2H, 2W, 3) uint8, one frame at a time, in tiles of `tile` input pixels."""
        import numpy as np
        import torch

        progress = progress or NullProgress()
        progress.start("upscale", len(frames))
        out = []
        with torch.inference_mode():
            for frame in frames:
                image = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None]
                image = image.to(self.dtype) / 255
                result = upscale_tiled(self.descriptor, image, self.scale, tile)
                pixels = (result[0].permute(1, 2, 0).float() * 255).round_().clamp_(0, 255).to(torch.uint8)
                out.append(pixels.cpu().numpy())
                progress.advance()
        progress.end()
        return np.stack(out)


def load_upscaler(source, device: torch.device, dtype: torch.dtype | None = None, *, placed: bool = True) -> Upscaler:
    """Read an upscaler file (a resolved `ModelSource` of kind "upscaler") through spandrel onto `device`.

    `dtype` None: fp16 on a CUDA GPU when the architecture supports it (spandrel's `supports_half`), else fp32.
    `placed` False: the weights stay on the CPU (in the dtype for `device`) until `place`, so a session can
    check the file before any video without taking device memory from the UNet.
    """
    import spandrel
    import torch

    path = check_loadable(source, "upscaler")
    not_recognised = f"{ref('upscaler')} {path}: not an upscaler spandrel recognises"
    try:
        descriptor = spandrel.ModelLoader("cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise UsageError(
            f"{not_recognised} (its tensors match none of the architectures spandrel {spandrel.__version__} knows); "
            "choose a Real-ESRGAN, ESRGAN or SwinIR .safetensors file.",
            option="upscaler",
            value=str(path),
        ) from None
    except (KeyError, ValueError, RuntimeError, IndexError, TypeError) as exc:
        raise UsageError(
            f"{not_recognised} ({type(exc).__name__}: {first_line(exc)[:160]}); "
            "choose a Real-ESRGAN, ESRGAN or SwinIR .safetensors file.",
            option="upscaler",
            value=str(path),
        ) from exc
    what = f"{descriptor.architecture.name} {descriptor.purpose} model"
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR":
        raise UsageError(
            f"{ref('upscaler')} {path}: a {what}, not a super-resolution model; choose a {FACTOR}x upscaler such as "
            "realesrgan-x2.",
            option="upscaler",
            value=str(path),
        )
    if descriptor.scale != FACTOR or (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        problem = (
            f"enlarges {descriptor.scale}x"
            if descriptor.scale != FACTOR
            else f"works on {descriptor.input_channels}-channel images"
        )
        raise UsageError(
            f"{ref('upscaler')} {path}: a {what} that {problem}, but the upscale stage needs a {FACTOR}x RGB "
            "upscaler; choose one such as realesrgan-x2.",
            option="upscaler",
            value=str(path),
        )
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" and descriptor.supports_half else torch.float32
    device = device if placed else torch.device("cpu")
    descriptor.to(device, dtype).eval()
    name = source.name if source.entry is not None else str(path)
    sha256 = (source.single_file or {}).get("sha256")
    return Upscaler(name, path, descriptor, device, dtype, sha256)


# --- tiling ---------------------------------------------------------------------------------------------------


def tile_spans(length: int, tile: int, overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """[start, end) of each tile along one side: as few tiles as fit in `tile` pixels with at least `overlap`
    shared, all the same size (a multiple of 4, at most `tile` rounded up to one) and spread evenly."""
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(length, 4 * math.ceil(math.ceil((length + (count - 1) * overlap) / count) / 4))
    starts = [i * (length - size) // (count - 1) for i in range(count)]
    return [(start, start + size) for start in starts]


def _ramp(start: int, end: int, length: int, width: int, device) -> torch.Tensor:
    """Blend weights along one side of a tile's output: rising over `width` pixels where another tile is before it,
    falling where one follows; 1 elsewhere and at the picture's edges. Never 0, so every pixel has a weight."""
    import torch

    n = end - start
    index = torch.arange(n, device=device, dtype=torch.float32)
    weight = torch.ones(n, device=device, dtype=torch.float32)
    if start > 0:
        weight = torch.minimum(weight, (index + 1) / (width + 1))
    if end < length:
        weight = torch.minimum(weight, (n - index) / (width + 1))
    return weight


def upscale_tiled(call, image: torch.Tensor, scale: int, tile: int | None, overlap: int = OVERLAP) -> torch.Tensor:
    """`call` (1, 3, H, W) -> (1, 3, sH, sW), run on overlapping tiles of `tile` input pixels and blended.

    Each tile's output is weighted by ramps across the overlap and the weighted sum divided by the summed
    weights (in fp32), so neighbouring tiles fade into each other instead of meeting at a seam.
    """
    import torch

    _, channels, height, width = image.shape
    if tile is None or (height <= tile and width <= tile):
        return call(image)
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    blended = image.new_zeros((1, channels, height * scale, width * scale), dtype=torch.float32)
    weights = image.new_zeros((1, 1, height * scale, width * scale), dtype=torch.float32)
    for y0, y1 in rows:
        along_y = _ramp(y0 * scale, y1 * scale, height * scale, overlap * scale, image.device)
        for x0, x1 in cols:
            along_x = _ramp(x0 * scale, x1 * scale, width * scale, overlap * scale, image.device)
            weight = along_y[:, None] * along_x[None, :]
            piece = call(image[:, :, y0:y1, x0:x1])
            blended[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] += piece.float() * weight
            weights[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] += weight
            del piece
    return (blended / weights).to(image.dtype)
