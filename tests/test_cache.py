"""The feature cache (--cache N, stages/hooks/cache.py): a reuse step is the full UNet call minus its deep part."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from svd_cli.models.architectures import TINY_UNET
from svd_cli.stages.hooks import Step
from svd_cli.stages.hooks.cache import FeatureCache

from .conftest import EXAMPLES

# SVD's four levels and block types with two layers a block (as the real UNet), at toy widths.
FOUR_LEVEL_UNET = dict(
    TINY_UNET,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(32, 32, 64, 64),
    num_attention_heads=(2, 2, 2, 2),
    layers_per_block=2,
)


@pytest.mark.parametrize("config", [TINY_UNET, FOUR_LEVEL_UNET], ids=["tiny", "four-level"])
def test_a_reuse_step_on_the_features_of_the_same_input_equals_the_full_call_without_the_deep_blocks(config):
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(**config).eval()
    inputs = dict(
        sample=torch.randn(2, 3, 8, 16, 16),  # CFG's two halves as one batch, 3 frames
        timestep=torch.tensor(0.7),
        encoder_hidden_states=torch.randn(2, 1, 32),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * 2),
    )
    deep_calls = []
    unet.mid_block.register_forward_hook(lambda *args: deep_calls.append(1))
    cache = FeatureCache(2)
    cached = cache.module(unet)
    cache.start(2)
    with torch.no_grad():
        cache.before(Step(1, 2, inputs["timestep"], inputs["sample"]))
        full = cached(**inputs, return_dict=False)[0]
        cache.before(Step(2, 2, inputs["timestep"], inputs["sample"]))
        reused = cached(**inputs, return_dict=False)[0]
        assert torch.equal(full, unet(**inputs, return_dict=False)[0])  # a full step is diffusers' own call
    assert deep_calls == [1, 1]  # the full step and the plain call; not the reuse step
    torch.testing.assert_close(reused, full, rtol=0, atol=1e-5)


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*/*.png"))])


def test_cache_1_is_the_uncached_video_and_cache_2_is_recorded_and_replayed(svd, tiny_dir, tmp_path):
    # balanced splits CFG: the unconditional and the conditional UNet call each keep their own features.
    args = ("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--frames", "2", "--steps", "3", "--size",
            "128x64", "--seed", "3", "--format", "frames", "--memory", "balanced")  # fmt: skip
    runs = {"none": (), "1": ("--cache", "1"), "2": ("--cache", "2")}
    for name, extra in runs.items():
        result = svd(*args, *extra, "--out", f"{tmp_path / name}/")
        assert result.code == 0, result.err
    none, one, two = (_frames(tmp_path / name) for name in runs)
    assert np.array_equal(one, none)
    assert not np.array_equal(two, none)  # step 2 of 3 reused step 1's deep features
    recipes = {name: json.loads((tmp_path / name / "coffee.frames.json").read_text()) for name in runs}
    assert "cache" not in recipes["none"]["settings"] and "cache" not in recipes["1"]["settings"]
    assert recipes["2"]["settings"]["cache"] == 2 and recipes["2"]["stages"][1]["settings"]["cache"] == 2
    result = svd("animate", "--recipe", tmp_path / "2" / "coffee.frames.json", "--out", f"{tmp_path / 'again'}/")
    assert result.code == 0, result.err
    assert np.array_equal(_frames(tmp_path / "again"), two)


def test_the_simulation_counts_a_reuse_step_in_the_flops_and_the_kept_features_in_the_peak():
    from svd_cli.memory.profiles import plan_for
    from svd_cli.planning.simulate import Job, architecture_for, simulate

    job = Job(frames=2, width=128, height=64, dtype="fp32")
    plain = simulate(architecture_for("tiny"), plan_for("balanced"), job, use_cache=False)
    cached = simulate(architecture_for("tiny"), plan_for("balanced"), replace(job, cache=2), use_cache=False)
    step, reuse = cached.stage_flops["step"], cached.stage_flops["reuse_step"]
    assert step == plain.stage_flops["step"] and 0 < reuse < step / 4  # the reuse step skips the deep blocks
    # 4 steps with cache 2: steps 1 and 3 full, 2 and 4 reuse steps (`svd plan --cache` reports this).
    f = cached.stage_flops
    assert cached.flops(4, 2) == f["encode"] + 2 * step + 2 * reuse + f["decode"] < plain.flops(4)
    # The kept features (one map per CFG half under balanced's CFG split) add to the denoising peak.
    assert cached.stage_peak_bytes["step"] > plain.stage_peak_bytes["step"]
