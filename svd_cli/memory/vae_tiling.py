"""Seam-free spatial tiling for SVD's temporal VAE (`AutoencoderKLTemporalDecoder`), and for the per-frame
`AutoencoderKL` of Stability's *_image_decoder files.

Where the memory goes: the decoder runs its last up-blocks at 2x, 4x and 8x the latent resolution with
128-512 channels for every frame, and one layer's temporaries (norm, activation, convolution, residual) are
several copies of that. Tiling runs the decoder one stage at a time (an upsampler, a spatio-temporal resnet,
the output layers); each stage reads the whole-frame tensor the previous stage wrote and computes its output
tile by tile, all frames of a tile together so the temporal layers still see every frame of the chunk. Only
one tile's temporaries exist at a time.

Why these tiles leave no seam (the picture is the untiled one, to float rounding):
1. Overlap: each tile reads a halo around its core as wide as the stage's receptive field (two 3x3
   convolutions for a resnet, one for an upsampler), so zero padding never reaches the core; only cores are
   written. Neighbouring cores meet exactly, so there is nothing left to blend.
2. Statistics: a GroupNorm normalises with the mean and variance of the whole frame; a tile's own statistics
   differ (sky vs. ground) and would shift brightness and contrast tile by tile. Here every GroupNorm uses
   whole-frame statistics: a stage with k GroupNorms makes k quick passes over the tiles, each stopping at
   the next GroupNorm after adding the tile's core to an exact running mean/variance (Chan's parallel
   formula), then one pass that writes the output.
The extra passes stop early, so a stage costs about 2-3x its untiled compute; the decoder is a few percent of a
video's time. The conditioning image's encoder is tiled the same way; its small latent-resolution middle
(with whole-frame attention) runs untiled.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

# The tile pass in progress, if any; SharedStatsGroupNorm consults it.
_active: _TilePass | None = None

DEFAULT_TILE = 128  # core size in pixels of the stage's input


class SharedStatsGroupNorm(nn.GroupNorm):
    """A GroupNorm that, during a tiled pass, normalises with whole-frame statistics instead of the tile's.

    Outside a tiled pass it is exactly `nn.GroupNorm`. Instances are re-classed in place (see
    `install_shared_stats_norms`), so weights, hooks and state dicts are untouched.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _active is None:
            return super().forward(x)
        return _active.group_norm(self, x)


def install_shared_stats_norms(vae: nn.Module) -> None:
    """Let the VAE's GroupNorms take part in tiled passes; idempotent, and a no-op for untiled runs."""
    for module in vae.modules():
        if type(module) is nn.GroupNorm:
            module.__class__ = SharedStatsGroupNorm


@dataclass(frozen=True)
class Stage:
    """One step of a network that maps a (..., H, W) tensor to a (..., H*scale, W*scale) tensor."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    scale: float = 1.0
    halo: int = 2  # input pixels of context each side: at least the stage's receptive-field radius
    align: int = 1  # tile edges fall on multiples of this (2 for a stride-2 downsampler)


@dataclass(frozen=True)
class _Tile:
    y0: int
    y1: int
    x0: int
    x1: int  # the core, in input pixels
    py0: int
    py1: int
    px0: int
    px1: int  # the core plus its halo, clipped to the frame


class _GroupStats:
    """Running count / mean / M2 per (sample, group), merged across tiles with Chan's formula.

    Kept in float64 on the CPU: exact enough for millions of pixels, and MPS has no float64.
    """

    def __init__(self) -> None:
        self.n: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        mean, m2 = mean.to("cpu", torch.float64), m2.to("cpu", torch.float64)
        if self.n is None:
            self.n, self.mean, self.m2 = torch.full_like(mean, n), mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.n * n / total)
        self.n = total

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.float(), (self.m2 / self.n).float()


class _StopTile(Exception):
    """Raised inside a tile's forward once the statistics this pass gathers are in."""


class _TilePass:
    """One pass over the tiles of a stage.

    GroupNorm calls are numbered in the order the stage makes them. Calls with known whole-frame statistics
    use them; call number `gather` (if set) adds the tile's core to the running statistics, and the tile is
    then abandoned: the rest of its forward would use statistics not known yet.
    """

    def __init__(self, stats: dict[int, tuple[torch.Tensor, torch.Tensor]], gather: int | None = None):
        self.stats = stats
        self.gather = gather
        self.gathered = _GroupStats()
        self.reached = False  # some tile got as far as GroupNorm call number `gather`
        self.calls = 0
        self.core: tuple[int, int, int, int] = (0, 0, 0, 0)  # core within the padded tile, input pixels
        self.size: tuple[int, int] = (1, 1)  # padded tile size, input pixels

    def group_norm(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        index, self.calls = self.calls, self.calls + 1
        n, groups = x.shape[0], norm.num_groups
        if index == self.gather:
            self.reached = True
            h, w = x.shape[-2:]
            sy, sx = h / self.size[0], w / self.size[1]
            cy0, cy1, cx0, cx1 = self.core
            core = x[..., round(cy0 * sy) : round(cy1 * sy), round(cx0 * sx) : round(cx1 * sx)]
            core = core.reshape(n, groups, -1).float()
            mean = core.mean(dim=2)
            self.gathered.add(core.shape[2], mean, (core - mean[..., None]).square().sum(dim=2))
            raise _StopTile
        mean, var = (t.to(x.device) for t in self.stats[index])
        flat = x.reshape(n, groups, -1).float()
        out = ((flat - mean[..., None]) * torch.rsqrt(var[..., None] + norm.eps)).reshape(x.shape)
        if norm.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            out = out * norm.weight.float().reshape(shape) + norm.bias.float().reshape(shape)
        return out.to(x.dtype)


@contextlib.contextmanager
def _activate(tile_pass: _TilePass) -> Iterator[None]:
    global _active
    previous, _active = _active, tile_pass
    try:
        yield
    finally:
        _active = previous


def _spans(length: int, tile: int, halo: int, align: int) -> list[tuple[int, int, int, int]]:
    """Split [0, length) into near-equal cores (edges on multiples of `align`) with clipped halos."""
    count = max(1, math.ceil(length / tile))
    step = max(align, math.ceil(length / count / align) * align)
    spans = []
    for start in range(0, length, step):
        end = min(length, start + step)
        spans.append((start, end, max(0, start - halo), min(length, end + halo)))
    return spans


def tiles_for(height: int, width: int, tile: int, halo: int, align: int = 1) -> list[_Tile]:
    rows = _spans(height, tile, halo, align)
    cols = _spans(width, tile, halo, align)
    return [_Tile(y0, y1, x0, x1, py0, py1, px0, px1) for y0, y1, py0, py1 in rows for x0, x1, px0, px1 in cols]


def run_stage_tiled(stage: Stage, x: torch.Tensor, tile: int = DEFAULT_TILE) -> torch.Tensor:
    """`stage.fn(x)`, computed tile by tile with whole-frame GroupNorm statistics (see module docstring)."""
    height, width = x.shape[-2:]
    tiles = tiles_for(height, width, tile, stage.halo, stage.align)
    if len(tiles) == 1:
        return stage.fn(x)

    # Gather the statistics of GroupNorm call 0, then 1, ... until no tile reaches the next one.
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    while True:
        tile_pass = _TilePass(stats, gather=len(stats))
        for t in tiles:
            with contextlib.suppress(_StopTile):
                _run_one(stage.fn, x, t, tile_pass)
        if not tile_pass.reached:
            break
        stats[len(stats)] = tile_pass.gathered.mean_var()

    out: torch.Tensor | None = None
    final = _TilePass(stats)
    scale = stage.scale
    for t in tiles:
        y = _run_one(stage.fn, x, t, final)
        if out is None:
            out = y.new_empty(y.shape[:-2] + (round(height * scale), round(width * scale)))
        oy, ox = round((t.y0 - t.py0) * scale), round((t.x0 - t.px0) * scale)
        ty0, ty1 = round(t.y0 * scale), round(t.y1 * scale)
        tx0, tx1 = round(t.x0 * scale), round(t.x1 * scale)
        out[..., ty0:ty1, tx0:tx1] = y[..., oy : oy + ty1 - ty0, ox : ox + tx1 - tx0]
        del y
    return out


def run_stages_tiled(stages: list[Stage], x: torch.Tensor, tile: int = DEFAULT_TILE) -> torch.Tensor:
    for stage in stages:
        x = run_stage_tiled(stage, x, tile)
    return x


def _run_one(fn, x: torch.Tensor, t: _Tile, tile_pass: _TilePass) -> torch.Tensor:
    tile_pass.core = (t.y0 - t.py0, t.y1 - t.py0, t.x0 - t.px0, t.x1 - t.px0)
    tile_pass.size = (t.py1 - t.py0, t.px1 - t.px0)
    tile_pass.calls = 0
    with _activate(tile_pass):
        return fn(x[..., t.py0 : t.py1, t.px0 : t.px1])


# --- SVD's VAE as a whole-frame trunk and tiled stages -------------------------------------------------------


def is_per_frame(vae) -> bool:
    """Whether `vae` decodes each frame on its own (the AutoencoderKL of Stability's *_image_decoder files)
    rather than all frames together (SVD's temporal decoder)."""
    return not hasattr(vae.decoder, "time_conv_out")


def decode_tiled(vae, latents: torch.Tensor, num_frames: int, tile: int = DEFAULT_TILE) -> torch.Tensor:
    """`vae.decode(latents, num_frames).sample`, with the high-resolution stages run on tiles."""
    decoder = vae.decoder
    per_frame = is_per_frame(vae)
    batch = latents.shape[0] // num_frames
    indicator = torch.zeros(batch, num_frames, dtype=latents.dtype, device=latents.device)
    upscale_dtype = next(iter(decoder.up_blocks.parameters())).dtype

    # Latent resolution, whole frame: small, and the mid block's attention needs the whole frame.
    if per_frame:
        if vae.post_quant_conv is not None:
            latents = vae.post_quant_conv(latents)
        h = decoder.mid_block(decoder.conv_in(latents)).to(upscale_dtype)
    else:
        h = decoder.mid_block(decoder.conv_in(latents), image_only_indicator=indicator).to(upscale_dtype)

    def resnet_stage(resnet) -> Stage:
        if per_frame:
            return Stage(lambda t: resnet(t, None), scale=1, halo=2)
        return Stage(lambda t: resnet(t, image_only_indicator=indicator), scale=1, halo=2)

    def output_layers(t: torch.Tensor) -> torch.Tensor:
        t = decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(t)))
        if per_frame:
            return t
        # time_conv_out mixes each pixel across frames: (B*F, C, H, W) -> (B, C, F, H, W) and back.
        frames, channels, height, width = t.shape
        t = t.reshape(batch, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)
        t = decoder.time_conv_out(t)
        return t.permute(0, 2, 1, 3, 4).reshape(frames, channels, height, width)

    stages: list[Stage] = []
    for block in decoder.up_blocks:
        stages += [resnet_stage(r) for r in block.resnets]
        stages += [Stage(u, scale=2, halo=1) for u in block.upsamplers or []]
    stages.append(Stage(output_layers, scale=1, halo=1))
    return run_stages_tiled(stages, h, tile)


def encode_tiled(vae, image: torch.Tensor, tile: int = DEFAULT_TILE) -> torch.Tensor:
    """`vae.encode(image).latent_dist.mode()`, with the high-resolution stages run on tiles."""
    encoder = vae.encoder
    stages = [Stage(encoder.conv_in, scale=1, halo=1)]
    for block in encoder.down_blocks:
        stages += [Stage(lambda t, r=r: r(t, None), scale=1, halo=2) for r in block.resnets]
        stages += [Stage(d, scale=0.5, halo=2, align=2) for d in block.downsamplers or []]
    h = run_stages_tiled(stages, image, tile)

    # Latent resolution, whole frame.
    h = encoder.mid_block(h)
    h = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(h)))
    moments = vae.quant_conv(h)
    mean, _logvar = torch.chunk(moments, 2, dim=1)
    return mean  # the mode of the diagonal Gaussian, what DiagonalGaussianDistribution.mode() returns
