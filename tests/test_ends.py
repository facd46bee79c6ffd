"""--end: a video sampled from both ends (ViBiDSampler), checked against the authors' steps written out plainly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from .conftest import EXAMPLES, Recorder

SIZE, FRAMES, STEPS, SEED = (128, 64), 4, 3, 5


def fitted(name: str, folder) -> tuple[Image.Image, object]:
    """A photo fitted to the video's size (as svd fits it: a centred crop), and the same picture as a file."""
    with Image.open(EXAMPLES / name) as photo:
        picture = ImageOps.fit(photo.convert("RGB"), SIZE, Image.Resampling.LANCZOS)
    path = folder / f"{name}.fitted.png"
    picture.save(path)
    return picture, path


@torch.no_grad()
def reference_latents(tiny_dir, start: Image.Image, end: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """The final latents of the authors' sampler (vibidsampler.py, its steps as issue 32 lists them) on diffusers'
    own pipeline parts, and the start picture's latents. Noise is drawn in svd's order from one CPU generator:
    each picture's noise augmentation (start, end), the initial latents, then one draw per step."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from diffusers.utils.torch_utils import randn_tensor

    pipe = StableVideoDiffusionPipeline.from_pretrained(tiny_dir, torch_dtype=torch.float32)
    generator = torch.Generator("cpu").manual_seed(SEED)
    device, fps, bucket, aug = torch.device("cpu"), 7, 127, 0.02

    def conditioning(picture):
        embeddings = pipe._encode_image(picture, device, 1, True)  # (uncond zeros, cond)
        pixels = pipe.video_processor.preprocess(picture, height=SIZE[1], width=SIZE[0])
        pixels = pixels + aug * randn_tensor(pixels.shape, generator=generator, dtype=pixels.dtype)
        latents = pipe._encode_vae_image(pixels, device, 1, True).unsqueeze(1).repeat(1, FRAMES, 1, 1, 1)
        ids = pipe._get_add_time_ids(fps - 1, bucket, aug, embeddings.dtype, 1, 1, True)
        return embeddings, latents, ids

    def clean(picture):
        pixels = pipe.video_processor.preprocess(picture, height=SIZE[1], width=SIZE[0])
        return (pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor)[:, None]

    forward, backward = conditioning(start), conditioning(end)
    start_latent, end_latent = clean(start), clean(end)
    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    sigmas, timesteps = scheduler.sigmas, scheduler.timesteps
    shape = (1, FRAMES, 4, SIZE[1] // 8, SIZE[0] // 8)
    x = randn_tensor(shape, generator=generator) * scheduler.init_noise_sigma

    def half_step(x, cond, last, sigma, following, t, scale=1.0):
        embeddings, image_latents, ids = cond
        scaled = torch.cat([x] * 2) / (sigma**2 + 1) ** 0.5
        v = pipe.unet(torch.cat([scaled, image_latents], dim=2), t, encoder_hidden_states=embeddings,
                      added_time_ids=ids).sample  # fmt: skip
        x0_u, x0_c = (x / (sigma**2 + 1) - sigma / (sigma**2 + 1) ** 0.5 * v).chunk(2)
        estimate = x0_u + scale * (x0_c - x0_u)
        estimate[:, -1:] = last  # DDS: the conjugate-gradient solve masked to the last frame is this replacement
        return estimate + (x - x0_u) / sigma * following  # CFG++

    for i in range(STEPS):
        sigma, following, t = sigmas[i], sigmas[i + 1], timesteps[i]
        x = half_step(x, forward, end_latent, sigma, following, t)
        x = x + randn_tensor(shape, generator=generator) * (sigma**2 - following**2) ** 0.5
        x = half_step(x.flip(1), backward, start_latent, sigma, following, t).flip(1)
    return x, start_latent


def test_svd_samples_from_both_ends_as_the_authors_steps_do(tiny_dir, tmp_path):
    import svd_cli

    start, _ = fitted("coffee.png", tmp_path)
    end, end_path = fitted("chelsea.png", tmp_path)
    model = svd_cli.load("tiny", frames=FRAMES, steps=STEPS, size=SIZE, device="cpu", dtype="fp32")
    video = model.animate_image(start, seed=SEED, end=end_path, keep_latents=True, watermark=False)
    expected, start_latent = reference_latents(tiny_dir, start, end)
    assert video.latents.shape == expected.shape
    assert (video.latents - expected).abs().max() < 1e-5
    # The first frame is the start picture's latents (the backward pass's last replacement, nothing added after).
    assert torch.equal(video.latents[:, 0], start_latent[:, 0])
    # The CFG split (balanced: both halves one after the other) computes the same.
    split = svd_cli.load("tiny", frames=FRAMES, steps=STEPS, size=SIZE, device="cpu", dtype="fp32", memory="balanced")
    assert split.memory_plan.cfg_split
    video = split.animate_image(start, seed=SEED, end=end_path, keep_latents=True, watermark=False)
    assert (video.latents - expected).abs().max() < 1e-5


def test_end_is_recorded_replayed_and_costs_two_guided_passes_a_step(svd, tiny_dir, tmp_path):
    _, end_path = fitted("chelsea.png", tmp_path)
    args = ("--model", "tiny", "--frames", "3", "--steps", "2", "--size", "128x64", "--seed", "4", "--format", "frames")
    made = svd("animate", EXAMPLES / "coffee.png", *args, "--end", end_path, "--out", tmp_path / "a")
    assert made.code == 0, made.err
    recipe = json.loads((tmp_path / "a.frames.json").read_text())
    assert recipe["input"]["end"]["path"] == str(end_path.resolve()) and recipe["settings"]["max_cfg"] == 1.0
    again = svd("animate", "--recipe", tmp_path / "a.frames.json", "--out", tmp_path / "b")
    assert again.code == 0, again.err
    first, second = sorted((tmp_path / "a").glob("*.png")), sorted((tmp_path / "b").glob("*.png"))
    assert len(first) == 3 and all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
                                   for a, b in zip(first, second, strict=True))  # fmt: skip

    flops = {}
    for name, extra in (("plain", ()), ("end", ("--end", end_path))):
        plan = svd("plan", "--model", "tiny", "--frames", "3", "--size", "128x64", "--max-cfg", "1.5", "--memory",
                   "high", *extra, "--json")  # fmt: skip
        assert plan.code == 0, plan.err
        flops[name] = {row["name"]: row["stage_flops"]["step"] for row in json.loads(plan.out)["rows"]}
    assert list(flops["end"]) == ["high"]  # --memory names the one profile to simulate
    assert flops["end"]["high"] == pytest.approx(2 * flops["plain"]["high"], rel=0.01)


def test_an_end_that_cannot_work_gets_one_line_before_any_work(svd, tiny_dir, tmp_path):
    _, end_path = fitted("chelsea.png", tmp_path)
    photo = EXAMPLES / "coffee.png"
    cases = {
        ("--end", tmp_path / "gone.png"): "--end " + str(tmp_path / "gone.png") + ": file not found",
        ("--end", end_path, "--extend", "1"): "--end samples from both ends and each extended clip starts",
        ("--end", end_path, "--sampler", "animatelcm", "--steps", "4"): "use --sampler euler",
    }
    for args, message in cases.items():
        result = svd("animate", photo, "--model", "tiny", *args, "--out", tmp_path / "out.mp4")
        assert result.code == 2 and message in result.err and "Traceback" not in result.err, (args, result.err)
    result = svd("animate", "--prompt", "a lake", "--model", "tiny", "--end", end_path)
    assert result.code == 2 and "give the photo" in result.err, result.err
    assert not (tmp_path / "out.mp4").exists()


def test_a_motion_loop_is_the_video_ended_on_its_own_first_frame_less_that_frame(svd, tiny_dir, tmp_path):
    photo = EXAMPLES / "coffee.png"
    args = ("--model", "tiny", "--frames", "4", "--steps", "2", "--size", "128x64", "--seed", "6", "--format", "frames")
    looped = svd("animate", photo, *args, "--loop", "motion", "--out", tmp_path / "loop")
    assert looped.code == 0, looped.err
    ended = svd("animate", photo, *args, "--end", photo, "--out", tmp_path / "ended")
    assert ended.code == 0, ended.err
    loop = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "loop").glob("*.png"))]
    full = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "ended").glob("*.png"))]
    assert len(loop) == 3 and len(full) == 4  # the frame that came back to the first is not shown twice
    assert all(np.array_equal(a, b) for a, b in zip(loop, full[:3], strict=True))
    both = svd("animate", photo, *args, "--loop", "motion", "--end", photo, "--out", tmp_path / "both")
    assert both.code == 2 and "--loop motion ends the video on its own first frame" in both.err, both.err


class StopInSegmentTwo(Recorder):
    """Interrupts the run as the second segment starts, as Ctrl-C would."""

    def note(self, message):
        super().note(message)
        if message.startswith("Segment 2/2"):
            raise KeyboardInterrupt


def test_keyframes_make_one_video_through_every_picture_and_resume_per_segment(svd, tiny_dir, tmp_path):
    from svd_cli.batch import Summary, run_jobs
    from svd_cli.jobs import jobs_for_request
    from svd_cli.options import Request, validate
    from svd_cli.session import Session

    pictures = [EXAMPLES / name for name in ("coffee.png", "chelsea.png", "astronaut.png")]
    out = tmp_path / "story"
    request = Request(pictures, keyframes=True, model="tiny", frames=5, steps=1, size=(128, 64), seed=2,
                      format="frames", out=out)  # fmt: skip
    validate(request)
    session = Session(request, StopInSegmentTwo())
    session.resolve()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(session, jobs_for_request(session), Summary(), reraise_unexpected=True)
    assert not out.exists()

    args = ("--keyframes", "--model", "tiny", "--frames", "5", "--steps", "1", "--size", "128x64", "--seed", "2",
            "--format", "frames")  # fmt: skip
    again = svd("animate", *pictures, *args, "--out", out)
    assert again.code == 0, again.err
    assert "Segment 1/2: finished by an earlier run, reused" in again.err, again.err
    made = sorted(out.glob("*.png"))
    assert len(made) == 9  # 3 pictures, 5 frames a segment: (3 - 1) x (5 - 1) + 1
    recipe = json.loads((tmp_path / "story.frames.json").read_text())
    assert [k["path"] for k in recipe["input"]["keyframes"]] == [str(p.resolve()) for p in pictures[1:]]
    replay = svd("animate", "--recipe", tmp_path / "story.frames.json", "--out", tmp_path / "replayed")
    assert replay.code == 0, replay.err
    assert all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
               for a, b in zip(made, sorted((tmp_path / "replayed").glob("*.png")), strict=True))  # fmt: skip

    one = svd("animate", pictures[0], *args, "--out", tmp_path / "one")
    assert one.code == 2 and "give two or more (found 1)" in one.err, one.err
    draft = svd("animate", *pictures, *args, "--draft", "--out", tmp_path / "draft")
    assert draft.code == 2 and "--keep-latents keeps one clip's latents, and --keyframes" in draft.err, draft.err

    # Several seeds: one video through the pictures each.
    takes = svd("animate", *pictures[:2], *args[:-4], "--seeds", "1,2", "--format", "frames", "--out", f"{tmp_path}/t/")
    assert takes.code == 0, takes.err
    assert sorted(p.name for p in (tmp_path / "t").iterdir() if p.is_dir()) == ["coffee-1", "coffee-2"]
