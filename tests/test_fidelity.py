"""Fidelity: with savers off our frames are diffusers' frames; each saver keeps the picture.

Everything runs the tiny model in fp32 on the CPU, loaded from disk through the normal loading code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from svd_cli.io.images import fit_image
from svd_cli.memory import MemoryPlan
from svd_cli.stages.animate import GenerationSettings, VideoModel

from .conftest import EXAMPLES

SETTINGS = GenerationSettings(
    frames=6, fps=8, motion_bucket=100, noise_aug=0.05, steps=3, min_cfg=1.0, max_cfg=3.0, seed=1234,
    width=256, height=128,
)  # fmt: skip


@pytest.fixture(scope="module")
def model(tiny_dir):
    from svd_cli.models.loading import load_model
    from svd_cli.models.sources import resolve_model

    return load_model(resolve_model("tiny"), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def picture():
    return fit_image(Image.open(EXAMPLES / "astronaut.png").convert("RGB"), 256, 128, "crop", (255, 255, 255))


def generate(model, plan: MemoryPlan, picture, output="float") -> np.ndarray:
    video_model = VideoModel(model, plan)
    try:
        return video_model(picture, SETTINGS, output=output)
    finally:
        video_model.placement.release()


@pytest.fixture(scope="module")
def reference(model, picture):
    return generate(model, MemoryPlan("high"), picture)


def test_cli_frames_equal_diffusers_pipeline(svd, tiny_dir, tmp_path, picture):
    """`svd animate` (savers off) vs diffusers' StableVideoDiffusionPipeline, same weights, image and seed."""
    from diffusers import StableVideoDiffusionPipeline

    photo = tmp_path / "astronaut.png"
    picture.save(photo)
    s = SETTINGS
    r = svd("animate", photo, "--model", "tiny", "--memory", "high", "--frames", s.frames, "--fps", s.fps,
            "--motion-bucket", s.motion_bucket, "--noise-aug", s.noise_aug, "--steps", s.steps,
            "--seed", s.seed, "--size", "256x128", "--no-watermark", "--format", "frames",
            "--out", tmp_path / "ours")  # fmt: skip
    assert r.code == 0, r.err
    ours = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "ours").glob("*.png"))])

    pipe = StableVideoDiffusionPipeline.from_pretrained(tiny_dir, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(
        picture, height=s.height, width=s.width, num_frames=s.frames, num_inference_steps=s.steps, fps=s.fps,
        motion_bucket_id=s.motion_bucket, noise_aug_strength=s.noise_aug, min_guidance_scale=s.min_cfg,
        max_guidance_scale=s.max_cfg, generator=torch.Generator("cpu").manual_seed(s.seed), output_type="pil",
    ).frames[0]  # fmt: skip
    theirs = np.stack([np.asarray(f) for f in frames])

    assert ours.shape == theirs.shape == (6, 128, 256, 3)
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    print(f"uint8 frames vs diffusers: max difference {diff.max()}, identical pixels {(diff == 0).mean():.4%}")
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999


SAVERS = {
    "cfg_split": MemoryPlan("custom", cfg_split=True),
    "ff_chunking": MemoryPlan("custom", ff_chunk_tokens=256),
    "attention_slicing": MemoryPlan("custom", attention="sliced", attention_slice_scores=4096),
    "model_offload": MemoryPlan("custom", offload="model"),
    "streamed_offload": MemoryPlan("custom", offload="stream"),
    "sequential_offload": MemoryPlan("custom", offload="sequential"),
    "vae_tiling": MemoryPlan("custom", vae_tiling=True, vae_tile=32),
    "all_together": MemoryPlan(
        "custom",
        offload="sequential",
        cfg_split=True,
        ff_chunk_tokens=256,
        attention="sliced",
        attention_slice_scores=4096,
        vae_tiling=True,
        vae_tile=32,
    ),  # fmt: skip
}


@pytest.mark.parametrize("saver", list(SAVERS))
def test_each_saver_keeps_the_frames(model, picture, reference, saver):
    frames = generate(model, SAVERS[saver], picture)
    assert frames.shape == reference.shape
    assert np.abs(frames - reference).max() <= 1e-4


def test_streamed_offload_really_streams_the_unet_layer_by_layer(model, picture):
    """The fidelity above means something only if every UNet layer was under diffusers' group offloading while the
    video was made (on the CPU without streams: each layer's weights moved before it ran), and nothing is left
    hooked after release (a later profile starts clean)."""
    unet = model.pipe.unet

    def grouped() -> list[str]:
        hooks = {name: getattr(m, "_diffusers_hook", None) for name, m in unet.named_modules()}
        return [name for name, registry in hooks.items() if registry and registry.get_hook("group_offloading")]

    layers = [name for name, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    video_model = VideoModel(model, MemoryPlan("custom", offload="stream"))
    try:
        assert set(layers) <= set(grouped())
        video_model(picture, SETTINGS)
    finally:
        video_model.placement.release()
    assert grouped() == [] and {p.device.type for p in unet.parameters()} == {"cpu"}


def test_attention_slicing_really_slices(model, picture, monkeypatch):
    """The fidelity above means something only if slicing split the attention into several calls."""
    sliced_calls = []  # our processor calls SDPA on (batch*heads, queries, dim) slices
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        if q.dim() == 3:
            sliced_calls.append(q.shape[:-1].numel() * k.shape[-2])
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    generate(model, SAVERS["attention_slicing"], picture)
    attention_layers = sum(1 for m in model.pipe.unet.modules() if type(m).__name__ == "Attention")
    assert len(sliced_calls) > 4 * attention_layers * SETTINGS.steps * 2
    assert max(sliced_calls) <= 4096


def test_decode_chunking_keeps_all_frames(model, picture, reference):
    """Decoding in chunks changes each chunk's temporal context (documented), not the number of frames."""
    frames = generate(model, MemoryPlan("custom", decode_chunk=4), picture)
    assert frames.shape == reference.shape
    assert np.abs(frames[:4] - reference[:4]).max() > 0  # a real change in the first chunk
    whole = generate(model, MemoryPlan("custom", decode_chunk=6), picture)
    assert np.abs(whole - reference).max() == 0  # one chunk of all frames is the saver-off path
