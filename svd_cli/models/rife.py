"""RIFE 4.13's flow network (IFNet), written for `rife-flownet-4.13.2.safetensors` (imaginairy/rife-interpolation).

Verified against a public reference, used as a test oracle only (none of its code is here): imaginAIry
(github.com/brycedrennan/imaginAIry, commit 1c79db1d78f480bb37641f266e9ac1489a46fe8c),
imaginairy/enhancers/video_interpolation/rife/IFNet_HDv3.py, whose loader reads exactly this file at revision
26442e52cc30b88c5cb490702647b8de9aaee8a7 with strict key matching. This network's state dict (random weights)
loaded into that one with strict=True (every name and shape the same), and on the same random frames both gave
the same in-between frame: largest difference 3.6e-06 (64x64), 1.7e-05 (256x128), 2.7e-05 (448x256), 1.4e-05
(200x120) and 6.1e-05 (1024x576), fp32, at times 0.5 and 0.25; the whole float path (zero padding to 128 as
the reference's video pipeline does, then cropping) differs by at most 6.6e-05. In uint8 this rounds where the
reference truncates (at most one level apart). The real file could not be downloaded here, so its own pictures
have not been looked at.

How it works: four blocks estimate the flow from the in-between time to both frames, coarse (1/8 size) to fine,
each refining the flow and replacing the blend mask; both frames are warped along it and blended by the mask.
The widths are read from the file, so the built-in `tiny-rife` (the same network, narrow) loads the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError, UsageError, first_line, ref
from .post import PostModel, check_loadable

WIDTHS = (192, 128, 96, 64)  # block0..block3 of RIFE 4.13
HEAD = 32  # hidden channels of the feature head
NETWORKS = {"rife": (WIDTHS, HEAD), "tiny": ((16, 16, 8, 8), 8)}
SCALES = (8, 4, 2, 1)  # each block works at 1/scale of the frame
FEATURES = 8  # channels of the learned per-frame features
# The network needs sides divisible by 32; RIFE's own video pipelines pad with zeros (bottom and right) to a
# multiple of 128, and the results near the edges depend on it, so frames are padded exactly as they were.
PAD = 128


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


class Features(nn.Module):
    """Per-frame features that are warped along with the frames (checkpoint prefix `encode.`)."""

    def __init__(self, hidden: int = HEAD):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, hidden, 3, 2, 1)
        self.cnn1 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn2 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(hidden, FEATURES, 4, 2, 1)

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

    def __init__(self, widths: tuple[int, ...] = WIDTHS, hidden: int = HEAD):
        super().__init__()
        frames_and_features = 2 * (3 + FEATURES)
        self.block0 = FlowBlock(frames_and_features + 1, widths[0])  # + time
        for i, width in enumerate(widths[1:], start=1):  # + time, mask, and the flow so far (4)
            setattr(self, f"block{i}", FlowBlock(frames_and_features + 1 + 1 + 4, width))
        self.encode = Features(hidden)

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


def build_rife_network(name: str, seed: int | None = None) -> IFNet:
    """The network `name` ("rife": RIFE 4.13's widths, "tiny": narrow), random weights from `seed`."""
    if seed is not None:
        torch.manual_seed(seed)
    widths, hidden = NETWORKS[name]
    return IFNet(widths, hidden).eval().requires_grad_(False)


def _widths(state: dict) -> tuple[tuple[int, ...], int] | None:
    """The block widths and head width a state dict was saved with, None if it lacks the tensors that tell."""
    try:
        widths = tuple(int(state[f"block{i}.conv0.1.0.weight"].shape[0]) for i in range(len(WIDTHS)))
        return widths, int(state["encode.cnn0.weight"].shape[0])
    except (KeyError, IndexError):
        return None


def load_ifnet(path: Path) -> IFNet:
    """The network with the weights in `path`, refused unless every name and shape is RIFE 4.13's (at the
    widths the file was saved with)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or first_line(exc, type(exc).__name__)
        raise ModelLoadError(
            f"Cannot read the RIFE weights {path} ({reason}); give a RIFE 4.13 safetensors file with "
            f"{ref('interpolator')}.",
            path=path,
        ) from exc
    model = IFNet(*(_widths(state) or (WIDTHS, HEAD)))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
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
        raise UsageError(
            f"{ref('interpolator')} {path}: not a RIFE 4.13 flow network ({detail}); choose "
            "rife-flownet-4.13.2.safetensors or the registry's rife.",
            option="interpolator",
            value=str(path),
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False)


def padded(pair: torch.Tensor) -> torch.Tensor:
    """Frames (N, 3, H, W) with zeros below and to the right up to multiples of `PAD`, as RIFE's pipelines do."""
    h, w = pair.shape[-2:]
    return F.pad(pair, (0, -w % PAD, 0, -h % PAD))


class Interpolator(PostModel):
    """A loaded RIFE network on a device: the frames between two frames at given times."""

    def in_between(self, a, b, t: float):
        return in_between(self.network, a, b, t)


def load_interpolator(source, device: torch.device | None = None) -> Interpolator:
    """Read a RIFE file (a resolved `ModelSource` of kind "interpolator", or a path) onto `device` (fp32: the
    network is small, and fp16 flow would move pixels by visible fractions)."""
    if isinstance(source, (str, Path)):
        path, name, sha256 = Path(source), str(source), None
    else:
        path = check_loadable(source, "interpolator")
        name = source.name if source.entry is not None else str(path)
        sha256 = (source.single_file or {}).get("sha256")
    device = device or torch.device("cpu")
    return Interpolator(name, path, load_ifnet(path).to(device), device, torch.float32, sha256)


@torch.no_grad()
def in_between(model: IFNet, a, b, t: float):
    """The uint8 frame at time `t` between uint8 frames `a` and `b` (H, W, 3), computed where the model is."""
    import numpy as np

    h, w = a.shape[:2]
    device = next(model.parameters()).device
    pair = padded(torch.from_numpy(np.stack([a, b])).to(device).permute(0, 3, 1, 2).float() / 255)
    out = model(pair[:1], pair[1:], t)[0, :, :h, :w]
    return (out * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
