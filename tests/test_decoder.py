"""A tiny decoder (--decoder): TAESD's decoder in place of the video model's VAE, read from TAESD's own layout."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from svd_cli.models.decoder import new_decoder, to_diffusers, to_taesd

from .conftest import EXAMPLES


def test_taesds_key_layout_maps_onto_diffusers_decoder_both_ways():
    """TAESD's Decoder starts with a clamp that has no weights: its first weighted layer is 1, diffusers' 0."""
    state = new_decoder().state_dict()
    original = to_taesd(state)
    assert "1.weight" in original and "layers.0.weight" in state  # the first convolution
    assert to_diffusers(original).keys() == state.keys()


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*/*.png"))])


def test_a_tiny_decoder_decodes_the_video_and_is_recorded_and_replayed(svd, tiny_dir, tmp_path):
    args = ("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--frames", "2", "--steps", "1", "--size",
            "128x64", "--seed", "3", "--format", "frames")  # fmt: skip
    for name, extra in {"full": (), "taesd": ("--decoder", "tiny-taesd")}.items():
        result = svd(*args, *extra, "--out", f"{tmp_path / name}/")
        assert result.code == 0, result.err
    full, taesd = _frames(tmp_path / "full"), _frames(tmp_path / "taesd")
    assert taesd.shape == full.shape == (2, 64, 128, 3) and not np.array_equal(taesd, full)
    recipes = {name: json.loads((tmp_path / name / "coffee.frames.json").read_text()) for name in ("full", "taesd")}
    assert "decoder" not in recipes["full"]["settings"]  # the default is not recorded: old recipes stay as they were
    assert recipes["taesd"]["settings"]["decoder"] == "tiny-taesd"
    assert recipes["taesd"]["stages"][1]["decoder"]["name"] == "tiny-taesd"
    result = svd("animate", "--recipe", tmp_path / "taesd" / "coffee.frames.json", "--out", f"{tmp_path / 'again'}/")
    assert result.code == 0, result.err
    assert np.array_equal(_frames(tmp_path / "again"), taesd)

    # What is not TAESD's decoder is refused in one line before any video.
    result = svd(*args, "--decoder", "tiny-upscaler", "--out", f"{tmp_path / 'no'}/")
    assert result.code == 2 and "--decoder tiny-upscaler: an upscaler, but this setting takes a tiny decoder" in \
        result.err, result.err  # fmt: skip
    not_taesd = tmp_path / "weights.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(not_taesd))
    result = svd(*args, "--decoder", not_taesd, "--out", f"{tmp_path / 'no'}/")
    assert result.code == 1 and f"--decoder {not_taesd}: not TAESD's decoder" in result.err, result.err
    assert not (tmp_path / "no" / "coffee").exists()


def test_the_simulation_runs_the_tiny_decoder_in_place_of_the_vaes():
    """`svd plan --decoder taesd` simulates TAESD's decoder (its real architecture) where the VAE would decode."""
    from dataclasses import replace

    from svd_cli.memory.profiles import plan_for
    from svd_cli.planning.simulate import Job, architecture_for, simulate

    job = Job(frames=2, width=128, height=64, dtype="fp32")
    plain = simulate(architecture_for("tiny"), plan_for("high"), job, use_cache=False)
    tiny = simulate(architecture_for("tiny"), plan_for("high"), replace(job, tiny_decoder=True), use_cache=False)
    assert tiny.stage_flops["step"] == plain.stage_flops["step"]
    # The decode is TAESD's decoder once per frame, as PyTorch's FLOP counter counts it on its own (TAESD is 64
    # channels wide at every scale, the tiny VAE 32: here, unlike at full size, it is the dearer one).
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode(), torch.no_grad(), FlopCounterMode(display=False) as counter:
        new_decoder().eval()(torch.zeros(1, 4, 64 // 8, 128 // 8))
    assert tiny.stage_flops["decode"] == 2 * counter.get_total_flops() != plain.stage_flops["decode"]
