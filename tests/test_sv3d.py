"""SV3D, the second model family (families/sv3d.py), against Stability's sampling script and sgm's formulas.

The formulas are written down here from generative-models (commit 0ad7de9): scripts/sampling/simple_video_sample.py
(`sv3d_u`: 21 frames, cond_aug 1e-5, the last frame replaced by the input picture), scripts/sampling/configs/
sv3d_u.yaml (adm_in_channels 256; ConcatTimestepEmbedderND outdim 256 for cond_aug; TrianglePredictionGuider
max_scale 2.5), sgm/modules/diffusionmodules/util.py `timestep_embedding` and guiders.py `triangle_wave`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import EXAMPLES


def sgm_timestep_embedding(value: float, dim: int) -> torch.Tensor:
    """sgm's timestep_embedding(t, dim): cos then sin of t * 10000^(-i / (dim / 2)), i < dim / 2."""
    half = dim // 2
    freqs = [math.exp(-math.log(10000) * i / half) for i in range(half)]
    return torch.tensor([math.cos(value * f) for f in freqs] + [math.sin(value * f) for f in freqs])


def sgm_triangle_scales(frames: int, min_scale: float, max_scale: float) -> list[float]:
    """TrianglePredictionGuider(period=1.0): 2 |v - floor(v + 0.5)| over linspace(0, 1, frames), scaled."""
    values = np.linspace(0, 1, frames)
    return list(2 * np.abs(values - np.floor(values + 0.5)) * (max_scale - min_scale) + min_scale)


def test_tiny_sv3d_orbits_21_frames_ending_on_the_input_view_with_sgms_conditioning(tmp_path):
    import svd_cli
    from svd_cli.errors import OptionError
    from svd_cli.families import FAMILIES

    model = svd_cli.load("tiny-sv3d", device="cpu", steps=2)
    unet = model.session.video_model.model.unet
    seen = []
    unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["added_time_ids"]), with_kwargs=True)
    video = model.animate_image(Image.open(EXAMPLES / "coffee.png"), seed=1, watermark=False)
    # The registry's defaults and the family's: 21 frames at 128x128 (tiny-sv3d's size), 10 fps.
    assert (video.frame_count, video.width, video.height, video.fps) == (21, 128, 128, 10)
    # The script replaces the last frame (the input view) by the input picture; the others are made.
    assert np.array_equal(video.frames[-1], np.asarray(video.first_frame))
    assert not np.array_equal(video.frames[-2], np.asarray(video.first_frame))
    # The UNet's conditioning vector: cond_aug alone, 1e-5, in both CFG halves of each of the 2 steps.
    assert len(seen) == 2 and all(ids.shape == (2, 1) for ids in seen)
    assert torch.allclose(seen[0].float(), torch.full((2, 1), 1e-5))
    with pytest.raises(OptionError, match=r"^noise_aug=0.1: tiny-sv3d takes no such setting: Stability's script fixes"):
        model.animate_image(Image.open(EXAMPLES / "coffee.png"), seed=1, noise_aug=0.1)
    # The guidance per frame is sgm's triangle: 1.0 at both ends, 2.5 half way.
    settings = model.session.settings_for(1, (576, 576))
    scales = FAMILIES["sv3d"].guidance(settings, torch.device("cpu"), torch.float64).flatten().tolist()
    assert settings.max_cfg == 2.5 and np.allclose(scales, sgm_triangle_scales(21, 1.0, 2.5))
    assert scales[0] == scales[-1] == 1.0 and scales[10] == 2.5


def test_full_size_sv3d_u_embeds_its_vector_as_sgm_does():
    from diffusers import UNetSpatioTemporalConditionModel

    from svd_cli.models.architectures import component_configs

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(component_configs("sv3d-u")["unet"])
    # adm_in_channels 256: label_emb's input is one 256-wide embedding, cond_aug's.
    assert unet.add_embedding.linear_1.in_features == 256 and unet.config.num_frames == 21
    ours = unet.add_time_proj.to("cpu")(torch.tensor([1e-5]))[0]
    assert torch.allclose(ours, sgm_timestep_embedding(1e-5, 256), atol=1e-6)
    ours = unet.add_time_proj.to("cpu")(torch.tensor([0.7]))[0]
    assert torch.allclose(ours, sgm_timestep_embedding(0.7, 256), atol=1e-6)


def test_an_sv3d_folder_names_its_family(svd, tmp_path):
    from svd_cli.models.tiny import ensure_tiny_model

    folder = ensure_tiny_model("tiny-sv3d")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "SV3DPipeline"
    assert json.loads((folder / "vae" / "config.json").read_text())["_class_name"] == "AutoencoderKL"
    rows = {row["name"]: row for row in json.loads(svd("weights", "list", "--json").out)}
    row = rows["tiny-sv3d"]
    assert (row["kind"], row["family"], row["frames"]) == ("video", "sv3d", 21)
    refused = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny-sv3d", "--frames", "14",
                  "--out", tmp_path / "a.mp4")  # fmt: skip
    assert refused.code == 2 and not list(tmp_path.iterdir())
    assert refused.err.strip().splitlines() == [
        "svd: error: --frames 14: tiny-sv3d takes no such setting: it makes 21 views of an orbit, as Stability's "
        "script does whatever it is asked; leave it out."
    ]
    result = svd("plan", "--model", folder, "--memory", "high", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert (report["frames"], report["width"], report["height"], report["steps"]) == (21, 576, 576, 50)
