"""VAE tiling must not change the picture: tiled vs untiled on the tiny model, at 512x320 in 64-pixel tiles (as many
tiles as 1024x576 has in the 128-pixel tiles of the profiles, at a quarter of the compute)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from svd_cli.memory import vae_tiling

from .conftest import EXAMPLES, psnr


@pytest.fixture(scope="module")
def vae(tiny_dir):
    from svd_cli.models.loading import load_model
    from svd_cli.models.sources import resolve_model

    vae = load_model(resolve_model("tiny"), torch.device("cpu"), torch.float32).vae
    vae_tiling.install_shared_stats_norms(vae)
    return vae


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real photo at 512x320 in [-1, 1]: structured content, where per-tile statistics would show."""
    from svd_cli.io.images import fit_image

    image = fit_image(Image.open(EXAMPLES / "astronaut.png").convert("RGB"), 512, 320, "crop", (255, 255, 255))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@torch.no_grad()
def test_tiled_decode_keeps_the_picture(vae, photo, monkeypatch):
    latent = vae.encode(photo).latent_dist.mode()
    latents = torch.cat([latent, latent + 0.3 * torch.randn_like(latent, generator=torch.Generator().manual_seed(0))])
    untiled = vae.decode(latents, num_frames=2).sample

    tiles_run = []
    original = vae_tiling.tiles_for
    monkeypatch.setattr(vae_tiling, "tiles_for", lambda *a, **k: tiles_run.append(original(*a, **k)) or tiles_run[-1])
    tiled = vae_tiling.decode_tiled(vae, latents, num_frames=2, tile=64)

    assert max(len(t) for t in tiles_run) >= 30  # the full-resolution stages really ran as many tiles
    assert tiled.shape == untiled.shape == (2, 3, 320, 512)
    value = psnr(to_uint8(tiled), to_uint8(untiled))
    assert value >= 40, f"PSNR {value:.1f} dB"
    assert (tiled - untiled).abs().max() < 1e-3


@torch.no_grad()
def test_tiled_encode_keeps_the_latents(vae, photo):
    untiled = vae.encode(photo).latent_dist.mode()
    tiled = vae_tiling.encode_tiled(vae, photo, tile=64)
    assert tiled.shape == untiled.shape == (1, 4, 40, 64)
    assert (tiled - untiled).abs().max() < 1e-3


@torch.no_grad()
def test_per_tile_statistics_would_show_seams(vae, photo):
    """Why whole-frame statistics matter: the same tiles with per-tile GroupNorm change the picture a lot."""
    latents = vae.encode(photo).latent_dist.mode()
    untiled = vae.decode(latents, num_frames=1).sample
    stage = vae_tiling.Stage(lambda t: vae.decode(t, num_frames=1).sample, scale=8, halo=8)
    naive = torch.cat(
        [torch.cat([stage.fn(latents[..., y : y + 20, x : x + 32]) for x in (0, 32)], dim=-1) for y in (0, 20)],
        dim=-2,
    )
    assert psnr(to_uint8(naive), to_uint8(untiled)) < 35


def test_tiles_cover_the_frame_exactly_once():
    tiles = vae_tiling.tiles_for(72, 128, tile=32, halo=2)
    covered = np.zeros((72, 128), dtype=int)
    for t in tiles:
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert t.py0 == max(0, t.y0 - 2) and t.px1 == min(128, t.x1 + 2)
    assert (covered == 1).all()
