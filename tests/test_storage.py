"""fp8 weight storage (--weights fp8): the UNet's weights kept as float8, each layer cast to the run's dtype."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from .conftest import EXAMPLES

ARGS = ("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--frames", "2", "--steps", "2", "--size", "128x64",
        "--seed", "3", "--format", "frames")  # fmt: skip


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)).astype(np.int16) for p in sorted(folder.glob("frame_*.png"))])


def test_fp8_weights_change_the_frames_a_little_and_every_profile_alike(svd, tiny_dir, tmp_path):
    runs = {"full": (), "fp8": ("--weights", "fp8"), "fp8-low": ("--weights", "fp8", "--memory", "low"),
            "fp8-min": ("--weights", "fp8", "--memory", "min")}  # fmt: skip
    for name, extra in runs.items():
        result = svd(*ARGS, *extra, "--out", tmp_path / name)
        assert result.code == 0, result.err
    full, fp8 = _frames(tmp_path / "full"), _frames(tmp_path / "fp8")
    difference = np.abs(full - fp8)
    print(f"fp8 weights vs full, tiny model: max {difference.max()}, mean {difference.mean():.2f} levels of 255")
    assert 0 < difference.mean() < 12  # rounded weights, the same arithmetic: near, not equal
    # The memory savers schedule the same work (streamed and sequential offload move the fp8 weights, cast after
    # each layer's move): the frames stay within one level, as with full weights (test_fidelity.py).
    assert np.abs(_frames(tmp_path / "fp8-low") - fp8).max() <= 1
    assert np.abs(_frames(tmp_path / "fp8-min") - fp8).max() <= 1
    # Recorded when set (test_design.py replays every recorded option), and nothing new in other recipes.
    recipe = json.loads((tmp_path / "fp8.frames.json").read_text())
    assert recipe["settings"]["weights"] == "fp8"
    assert "weights" not in json.loads((tmp_path / "full.frames.json").read_text())["settings"]


def test_the_simulation_counts_fp8_weights_as_a_real_unet_stores_them():
    """The simulated weights shrink by exactly what storing a real tiny UNet in fp8 saves."""
    from dataclasses import replace

    from diffusers import UNetSpatioTemporalConditionModel

    from svd_cli.memory.profiles import plan_for
    from svd_cli.memory.storage import store_weights
    from svd_cli.models.architectures import ARCHITECTURES
    from svd_cli.planning.simulate import Job, architecture_for, simulate

    job = Job(frames=2, width=128, height=64, dtype="fp16")
    full = simulate(architecture_for("tiny"), plan_for("high"), job, use_cache=False)
    fp8 = simulate(architecture_for("tiny"), plan_for("high"), replace(job, weights="fp8"), use_cache=False)
    unet = UNetSpatioTemporalConditionModel(**ARCHITECTURES["tiny"][0]).to(torch.float16)
    before = sum(p.numel() * p.element_size() for p in unet.parameters())
    store_weights(unet, "fp8", torch.float16)
    after = sum(p.numel() * p.element_size() for p in unet.parameters())
    assert full.weights_bytes - fp8.weights_bytes == before - after > before / 3
    assert fp8.peak_bytes < full.peak_bytes and fp8.stage_flops == full.stage_flops


def test_fp8_weights_are_really_stored_as_float8_on_the_loaded_unet(tiny_dir):
    import svd_cli

    unet = svd_cli.load("tiny", device="cpu", weights="fp8", frames=2, size=(128, 64)).session.video_model.model.unet
    stored = {p.dtype for p in unet.parameters()}
    assert torch.float8_e4m3fn in stored  # the linear and convolution weights
    assert torch.float32 in stored  # norms and embeddings stay in the run's dtype (fp32 on the CPU)
