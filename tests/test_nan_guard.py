"""A video of NaN or black frames is never reported as a success.

The broken models are the tiny model saved again with some weights changed (real classes, loaded through the
real loading path): NaN in the UNet, or weights that overflow fp16 (the known SVD failure) in both the UNet
and the VAE decoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import EXAMPLES, read_video

FAST = ["--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "1"]


def _broken_copy(tiny_dir: Path, target: Path, changes: dict[str, callable]) -> Path:
    """The tiny model with tensors changed: {"unet/conv_out.weight": fn(tensor) -> None, ...}."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_dir, target)
    for component in {key.split("/")[0] for key in changes}:
        path = target / component / "diffusion_pytorch_model.safetensors"
        tensors = load_file(path)
        for key, change in changes.items():
            if key.startswith(component + "/"):
                change(tensors[key.split("/", 1)[1]])
        save_file(tensors, path, metadata={"format": "pt"})
    return target


@pytest.fixture(scope="module")
def nan_model(tiny_dir, tmp_path_factory):
    def poison(t):
        t[0, 0, 0, 0] = float("nan")

    return _broken_copy(tiny_dir, tmp_path_factory.mktemp("nan") / "nan-unet", {"unet/conv_out.weight": poison})


@pytest.fixture(scope="module")
def overflow_model(tiny_dir, tmp_path_factory):
    """UNet output weights of 60000 (fine in fp16, but the activations are not); a decoder that draws black."""
    changes = {
        "unet/conv_out.weight": lambda t: t.fill_(60000.0),
        "vae/decoder.conv_out.weight": lambda t: t.zero_(),
        "vae/decoder.conv_out.bias": lambda t: t.fill_(-10.0),
    }
    return _broken_copy(tiny_dir, tmp_path_factory.mktemp("overflow") / "overflow", changes)


def test_nan_weights_fail_the_video_in_one_line_and_write_nothing(svd, nan_model, tmp_path):
    out = tmp_path / "out"
    r = svd("animate", EXAMPLES / "coffee.png", "--model", nan_model, *FAST, "--out", f"{out}/", "--json")
    assert r.code == 1
    failures = [line for line in r.err.splitlines() if line.startswith("✗")]
    assert failures == [
        f"✗ {EXAMPLES / 'coffee.png'}: the model produced NaN or infinite values while denoising (step 1 of 1) in "
        "fp32, so no video was written; its weights may be damaged: check them with `svd weights verify`."
    ]
    assert r.err.count("NaN or infinite") == 1, "one failure, printed once"
    assert json.loads(r.out.splitlines()[0])["status"] == "failed"
    assert not out.exists() or list(out.iterdir()) == []


def test_fp16_overflow_is_redone_wider_and_flat_frames_are_warned(svd, overflow_model, tmp_path):
    out = tmp_path / "v.mp4"
    r = svd("animate", EXAMPLES / "coffee.png", "--model", overflow_model, *FAST, "--dtype", "fp16",
            "--out", out, "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert "Non-finite values (NaN) while denoising in fp16; redoing this video with the denoiser in bf16" in r.err
    assert "Non-finite values (NaN) while decoding in fp16; decoding again with the VAE decoder in fp32" in r.err
    assert "Warning: every frame is a single flat colour" in r.err
    line = json.loads(r.out.splitlines()[0])
    assert line["status"] == "ok" and line["warnings"] == [
        "every frame is a single flat colour: the model may have failed (check the video)"
    ]
    frames = read_video(out)[1]
    assert frames.shape == (2, 64, 128, 3) and np.isfinite(frames).all()
    assert all(np.ptp(f.reshape(-1, 3), axis=0).max() <= 2 for f in frames)  # flat, as warned (H.264 may round)
    stages = json.loads(out.with_name("v.mp4.json").read_text())["stages"]
    assert stages[1]["upcast"] == {"denoiser": "bf16", "decoder": "fp32"}
