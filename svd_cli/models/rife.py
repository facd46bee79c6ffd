"""RIFE 4.13's flow network (IFNet), written for `rife-flownet-4.13.2.safetensors` (imaginairy/rife-interpolation).

What is and is not verified: the module names and tensor shapes follow two public descriptions of that exact
checkpoint (a loader that states it loads it with strict key matching, and an independent port's notes: four
blocks 192/128/96/64 wide, an 8-channel feature head, beta-scaled residual convolutions, a 24-channel transposed
convolution pixel-shuffled by 2). The file itself could not be downloaded here, so neither a strict load of the
real weights nor the real network's pictures have been checked; `load_ifnet` refuses any file whose names or
shapes differ, so a mismatch is an error, never a silent partial load.

How it works: four blocks estimate the flow from the in-between time to both frames, coarse (1/8 size) to fine,
each refining the last; both frames are warped along it and blended by a learned mask.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError, ref

WIDTHS = (192, 128, 96, 64)  # block0..block3
SCALES = (8, 4, 2, 1)  # each block works at 1/scale of the frame
FEATURES = 8  # channels of the learned per-frame features
MULTIPLE = 32  # block0 works at 1/8 and halves twice more: frames are padded to this


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


class Features(nn.Module):
    """Per-frame features that are warped along with the frames (checkpoint prefix `encode.`)."""

    def __init__(self):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 32, 3, 2, 1)
        self.cnn1 = nn.Conv2d(32, 32, 3, 1, 1)
        self.cnn2 = nn.Conv2d(32, 32, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(32, FEATURES, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.cnn0, self.cnn1, self.cnn2):
            x = F.leaky_relu(conv(x), 0.2)
        return self.cnn3(x)


class Residual(nn.Module):
    """A convolution added back to its input, scaled per channel by a learned `beta`."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, 0.2)


class FlowBlock(nn.Module):
    """One coarse-to-fine level: from its inputs (and the flow so far) a flow update and a blend mask."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(channels, width // 2, 2), _conv(width // 2, width, 2))
        self.convblock = nn.Sequential(*(Residual(width) for _ in range(8)))
        # 4 * 6 channels shuffled into 6 at twice the size: flow to both frames (4), mask (1), one unused
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * 6, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: int):
        def resize(t: torch.Tensor, factor: float) -> torch.Tensor:
            return t if factor == 1 else F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)

        x = resize(x, 1 / scale)
        if flow is not None:
            x = torch.cat([x, resize(flow, 1 / scale) / scale], 1)
        out = resize(self.lastconv(self.convblock(self.conv0(x))), scale)
        return out[:, :4] * scale, out[:, 4:5]


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """`image` sampled at each pixel plus `flow` (in pixels), edges repeated."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=image.dtype, device=image.device),
        torch.arange(w, dtype=image.dtype, device=image.device),
        indexing="ij",
    )
    x = (xs + flow[:, 0]) / max(w - 1, 1) * 2 - 1
    y = (ys + flow[:, 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([x, y], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    """Two frames (N, 3, H, W) in 0..1, H and W multiples of 32, and a time in (0, 1): the frame at that time."""

    def __init__(self):
        super().__init__()
        frames_and_features = 2 * (3 + FEATURES)
        self.block0 = FlowBlock(frames_and_features + 1, WIDTHS[0])  # + time
        for i, width in enumerate(WIDTHS[1:], start=1):  # + time, mask, and the flow so far (4)
            setattr(self, f"block{i}", FlowBlock(frames_and_features + 1 + 1 + 4, width))
        self.encode = Features()

    def forward(self, a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
        time = torch.full_like(a[:, :1], t)
        fa, fb = self.encode(a), self.encode(b)
        flow, mask = self.block0(torch.cat([a, b, fa, fb, time], 1), None, SCALES[0])
        wa, wb = warp(a, flow[:, :2]), warp(b, flow[:, 2:4])
        for i in range(1, len(WIDTHS)):
            block = getattr(self, f"block{i}")
            warped_features = [warp(fa, flow[:, :2]), warp(fb, flow[:, 2:4])]
            update, mask = block(torch.cat([wa, wb, *warped_features, time, mask], 1), flow, SCALES[i])
            flow = flow + update
            wa, wb = warp(a, flow[:, :2]), warp(b, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return (wa * weight + wb * (1 - weight)).clamp(0, 1)


def load_ifnet(path: Path) -> IFNet:
    """The network with the weights in `path`, refused unless every name and shape is exactly RIFE 4.13's."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    model = IFNet()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise ModelLoadError(
            f"Cannot read the RIFE weights {path} ({reason}); give a RIFE 4.13 safetensors file with "
            f"{ref('interpolator')}.",
            path=path,
        ) from exc
    missing = sorted(expected.keys() - state.keys())
    extra = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k])
    if missing or extra or wrong:
        detail = (
            f"{len(missing)} expected weights missing (e.g. {missing[0]})"
            if missing
            else f"unexpected weights (e.g. {extra[0]})"
            if extra
            else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, not {expected[wrong[0]]}"
        )
        raise ModelLoadError(
            f"{path} is not a RIFE 4.13 flow network: {detail}; use rife-flownet-4.13.2.safetensors.", path=path
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


@torch.no_grad()
def in_between(model: IFNet, a, b, t: float):
    """The uint8 frame at time `t` between uint8 frames `a` and `b` (H, W, 3)."""
    import numpy as np

    h, w = a.shape[:2]
    pair = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float() / 255
    pair = F.pad(pair, (0, -w % MULTIPLE, 0, -h % MULTIPLE), mode="replicate")
    out = model(pair[:1], pair[1:], t)[0, :, :h, :w]
    return (out * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
