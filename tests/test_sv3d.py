"""SV3D, the second model family (families/sv3d.py), against Stability's sampling script and sgm's formulas.

The formulas are written down here from generative-models (commit 0ad7de9): scripts/sampling/simple_video_sample.py
(`sv3d_u`: 21 frames, cond_aug 1e-5, the last frame replaced by the input picture), scripts/sampling/configs/
sv3d_u.yaml (adm_in_channels 256; ConcatTimestepEmbedderND outdim 256 for cond_aug; TrianglePredictionGuider
max_scale 2.5), sgm/modules/diffusionmodules/util.py `timestep_embedding` and guiders.py `triangle_wave`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

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

    model = svd_cli.load("tiny-sv3d", device="cpu", steps=2, size=(64, 64))
    unet = model.session.video_model.model.unet
    seen = []
    unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["added_time_ids"]), with_kwargs=True)
    video = model.animate_image(Image.open(EXAMPLES / "coffee.png"), seed=1, watermark=False)
    # The family's defaults: 21 frames at 10 fps.
    assert (video.frame_count, video.width, video.height, video.fps) == (21, 64, 64, 10)
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


# --- Stability's single files --------------------------------------------------------------------------------

REFERENCE = Path(__file__).parent / "reference"
# What svd reads of an SV3D file; the rest is the OpenCLIP text tower's leftovers and the conditioning
# autoencoder's decoder half, which sampling never runs.
READ = ("model.diffusion_model.", "first_stage_model.decoder.", "conditioner.embedders.1.encoder.encoder.",
        "conditioner.embedders.1.encoder.quant_conv.", "conditioner.embedders.0.open_clip.model.visual.")  # fmt: skip
UNREAD = ("conditioner.embedders.0.open_clip.model.", "conditioner.embedders.1.encoder.decoder.",
          "conditioner.embedders.1.encoder.post_quant_conv.")  # fmt: skip


@pytest.mark.parametrize(("table", "vector"), [("sv3d_u_state_dict.json", 256), ("sv3d_p_state_dict.json", 1280)])
def test_every_tensor_of_stabilitys_sv3d_files_is_read_into_a_parameter_of_its_shape(table, vector):
    """tests/reference/sv3d_*_state_dict.json: the names and shapes of generative-models' sv3d_u.yaml / sv3d_p.yaml
    DiffusionEngines, built on the meta device at commit 0ad7de9. The converter's name for every parameter of the
    full-size diffusers components is a tensor of the file with the parameter's shape, and every tensor that
    sampling needs is some parameter's."""
    from diffusers import AutoencoderKL, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from svd_cli.models.architectures import component_configs
    from svd_cli.models.single_file import SV3D_VAE_ENCODER_PREFIX, UNET_PREFIX, clip_key, unet_key, vae_key

    reference = {name: tuple(shape) for name, (_, shape) in json.loads((REFERENCE / table).read_text()).items()}
    configs = component_configs("sv3d-u")
    configs["unet"]["projection_class_embeddings_input_dim"] = vector  # adm_in_channels of the file's config
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["image_encoder"]))
    read = {}
    for key, parameter in unet.named_parameters():
        read[UNET_PREFIX + unet_key(key, configs["unet"])] = tuple(parameter.shape)
    for key, parameter in vae.named_parameters():
        name, transform = vae_key(key, 4, SV3D_VAE_ENCODER_PREFIX)
        read[name] = tuple(parameter.shape) + ((1, 1) if transform is not None else ())  # 1x1 convolutions in sgm
    for key, parameter in clip.named_parameters():
        name, transform, rows = clip_key(key)
        shape = tuple(parameter.shape)
        if rows is not None:  # q, k and v packed in one matrix: each a third of its rows
            shape = (shape[0] * rows[1], *shape[1:])
        read[name] = shape[::-1] if transform is not None else shape
    assert {name: shape for name, shape in read.items() if reference.get(name) != shape} == {}
    assert sorted(name for name in reference if name.startswith(READ) and name not in read) == []
    assert all(name.startswith(READ + UNREAD) for name in reference)
    assert reference["model.diffusion_model.label_emb.0.0.weight"] == (1280, vector)


def test_an_sv3d_single_file_gives_the_frames_of_the_same_model_in_diffusers_layout(svd, tmp_path):
    from svd_cli.families.sv3d import sv3d_pipeline_class
    from svd_cli.models.tiny import ensure_tiny_model

    from .sgm_layout import write_sgm_file

    pipe = sv3d_pipeline_class().from_pretrained(ensure_tiny_model("tiny-sv3d"), torch_dtype=torch.float32)
    single = write_sgm_file(pipe, tmp_path / "tiny-sv3d_u.safetensors")
    runs = {}
    for name, model in (("file", single), ("folder", "tiny-sv3d")):
        r = svd("animate", EXAMPLES / "coffee.png", "--model", model, "--size", "64x64", "--steps", "2",
                "--seed", "4", "--format", "frames", "--out", tmp_path / name)  # fmt: skip
        assert r.code == 0, r.err
        pictures = sorted((tmp_path / name).glob("*.png"))
        runs[name] = np.stack([np.asarray(Image.open(p)) for p in pictures]).astype(int)
    assert runs["file"].shape == (21, 64, 64, 3)
    assert np.abs(runs["file"] - runs["folder"]).max() <= 1
    recipe = json.loads((tmp_path / "file.frames.json").read_text())
    assert recipe["model"]["single_file"]["arch"] == "tiny-sv3d" and recipe["settings"]["frames"] == 21


def sgm_sv3d_p_vector(augmentation: float, elevation: float, frames: int) -> torch.Tensor:
    """The script's sv3d_p values (polars_rad = deg2rad(90 - elevation); azimuths linspace(0, 360, frames + 1)[1:]
    % 360, made relative to the last and in radians) through the conditioner: cond_aug, polars_rad, azimuths_rad
    embedded 256, 512, 512 wide, concatenated per frame."""
    azimuths = np.linspace(0, 360, frames + 1)[1:] % 360
    relative = [np.deg2rad((a - azimuths[-1]) % 360) for a in azimuths]
    rows = []
    for azimuth in relative:
        parts = (sgm_timestep_embedding(augmentation, 256), sgm_timestep_embedding(np.deg2rad(90 - elevation), 512),
                 sgm_timestep_embedding(azimuth, 512))  # fmt: skip
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def test_sv3d_p_gives_each_frame_the_camera_vector_sgms_conditioner_makes():
    import svd_cli

    model = svd_cli.load("tiny-sv3d-p", device="cpu", steps=1, size=(64, 64), dtype="fp32")
    unet = model.session.video_model.model.unet
    vectors, tembs = [], []
    unet.add_embedding.register_forward_pre_hook(lambda module, args: vectors.append(args[0]))
    first_resnet = unet.down_blocks[0].resnets[0]  # it gets the embedding its block was given
    first_resnet.register_forward_pre_hook(
        lambda m, args, kwargs: tembs.append(kwargs.get("temb", args[1])), with_kwargs=True
    )
    video = model.animate_image(Image.open(EXAMPLES / "coffee.png"), seed=2, watermark=False)
    assert video.frame_count == 21
    expected = sgm_sv3d_p_vector(1e-5, 10.0, 21)
    # One step with CFG as one batch: both halves' 21 frames carry the same cameras (sgm copies the batch for uc).
    assert vectors[0].shape == (42, 1280)
    assert torch.allclose(vectors[0][:21], expected, atol=1e-5) and torch.allclose(vectors[0][21:], expected, atol=1e-5)
    # Each frame's block input is the timestep's embedding plus that frame's own camera embedding.
    temb, camera = tembs[0], unet.add_embedding(expected)
    assert torch.allclose(temb[5] - temb[0], camera[5] - camera[0], atol=1e-5)
    assert not torch.allclose(temb[5], temb[0])


def test_a_camera_path_is_recorded_and_its_replay_gives_the_same_frames(svd, tmp_path):
    import svd_cli

    first = tmp_path / "first"
    r = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny-sv3d-p", "--size", "64x64", "--steps", "2",
            "--elevation", "20", "--azimuths", "21", "--seed", "6", "--format", "frames", "--out", first)  # fmt: skip
    assert r.code == 0, r.err
    settings = json.loads((tmp_path / "first.frames.json").read_text())["settings"]
    assert settings["elevation"] == [20.0] and np.allclose(settings["azimuths"], np.linspace(0, 360, 22)[1:] % 360)
    again = tmp_path / "again"
    r = svd("animate", "--recipe", tmp_path / "first.frames.json", "--out", again)
    assert r.code == 0, r.err
    frames = [np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]) for folder in (first, again)]
    assert frames[0].shape == (21, 64, 64, 3) and np.array_equal(frames[0], frames[1])
    # The path reaches the UNet as sgm's conditioner embeds it (elevation 20 here).
    model = svd_cli.load("tiny-sv3d-p", device="cpu", steps=1, size=(64, 64), dtype="fp32", elevation=20)
    vectors = []
    model.session.video_model.model.unet.add_embedding.register_forward_pre_hook(lambda m, a: vectors.append(a[0]))
    model.animate_image(Image.open(EXAMPLES / "coffee.png"), seed=2, watermark=False)
    assert torch.allclose(vectors[0][:21], sgm_sv3d_p_vector(1e-5, 20.0, 21), atol=1e-5)


@pytest.mark.parametrize(
    ("model", "args", "line"),
    [
        (
            "tiny",
            ["--elevation", "20"],
            "--elevation 20: tiny takes no such setting: its models take no camera (sv3d-p's do); leave it out.",
        ),
        (
            "tiny-sv3d",
            ["--azimuths", "21"],
            "--azimuths 17.1429,34.2857,51.4286,68.5714,85.7143,102.857,120,137.143,"
            "154.286,171.429,188.571,205.714,222.857,240,257.143,274.286,291.429,308.571,325.714,342.857,0: tiny-sv3d "
            "takes no such setting: sv3d_u takes no camera (sv3d-p does); leave it out.",
        ),
        (
            "tiny-sv3d-p",
            ["--azimuths", "0,90,180,270"],
            "--azimuths 0,90,180,270: tiny-sv3d-p needs one azimuth for each of its 21 frames (or the count 21).",
        ),
        ("tiny-sv3d-p", ["--elevation", "95"], "--elevation 95: each elevation must be between -90 and 90 degrees."),
        (
            "tiny-sv3d-p",
            ["--end", str(EXAMPLES / "rocket.jpg")],
            f"--end {EXAMPLES / 'rocket.jpg'}: tiny-sv3d-p takes no such setting: its last frame is the input view "
            "itself; leave it out.",
        ),
        (
            "tiny-sv3d",
            [EXAMPLES / "rocket.jpg", "--keyframes"],
            "--keyframes: tiny-sv3d takes no such setting: its last frame is the input view itself; leave it out.",
        ),
        (
            "tiny",
            ["--remove-background"],
            "--remove-background: tiny takes no such setting: its models animate the whole photo (SV3D's orbit an "
            "object cut out of one); leave it out.",
        ),
    ],
)
def test_a_camera_path_the_model_cannot_take_is_refused_in_one_line(svd, tmp_path, model, args, line):
    r = svd("animate", EXAMPLES / "coffee.png", "--model", model, *args, "--size", "64x64", "--out", tmp_path / "x.mp4")
    assert r.code == 2 and r.err.strip().splitlines()[-1] == f"svd: error: {line}"
    assert not (tmp_path / "x.mp4").exists()


def script_preparation(image: Image.Image, side: int) -> np.ndarray:
    """simple_video_sample.py's lines for an RGBA input (cv2's threshold at 0 and boundingRect as numpy), resized to
    `side` instead of 576."""
    image_arr = np.array(image)
    in_w, in_h = image_arr.shape[:2]
    ys, xs = np.nonzero(np.array(image.split()[-1]) > 0)
    x, y, w, h = xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    side_len = in_w
    padded_image = np.zeros((side_len, side_len, 4), dtype=np.uint8)
    center = side_len // 2
    padded_image[center - h // 2 : center - h // 2 + h, center - w // 2 : center - w // 2 + w] = image_arr[
        y : y + h, x : x + w
    ]
    rgba = Image.fromarray(padded_image).resize((side, side), Image.LANCZOS)
    rgba_arr = np.array(rgba) / 255.0
    rgb = rgba_arr[..., :3] * rgba_arr[..., -1:] + (1 - rgba_arr[..., -1:])
    return (rgb * 255).astype(np.uint8)


def test_a_cut_out_object_is_recentred_on_white_as_stabilitys_script_does(svd, tmp_path):
    import svd_cli

    cut_out = np.zeros((120, 200, 4), dtype=np.uint8)
    cut_out[10:50, 20:60] = (200, 30, 30, 255)  # a red box near the top left, the rest transparent
    cut_out[50:60, 20:60, 3] = 128  # a half-transparent shadow under it
    picture = Image.fromarray(cut_out, "RGBA")
    model = svd_cli.load("tiny-sv3d", device="cpu", steps=1, size=(64, 64))
    video = model.animate_image(picture, seed=1, watermark=False)
    expected = script_preparation(picture, 64)
    assert np.array_equal(np.asarray(video.first_frame), expected) and np.array_equal(video.frames[-1], expected)
    # The same picture as a PNG file on the command line: its last frame, read back, is the script's picture too.
    picture.save(tmp_path / "box.png")
    r = svd("animate", tmp_path / "box.png", "--model", "tiny-sv3d", "--size", "64x64", "--steps", "1", "--seed", "1",
            "--format", "frames", "--out", tmp_path / "box")  # fmt: skip
    assert r.code == 0, r.err
    assert np.array_equal(np.asarray(Image.open(sorted((tmp_path / "box").glob("frame_*.png"))[-1])), expected)
    assert json.loads((tmp_path / "box.frames.json").read_text())["stages"][0]["recentred"] is True
    red = np.argwhere((expected[..., 0] > 150) & (expected[..., 1] < 100))
    # The box and its shadow (rows 10-59, columns 20-59) are centred in a 120-pixel square, then scaled to 64: the
    # box's own centre lands at (54.5, 59.5) * 64 / 120.
    assert np.allclose(red.mean(axis=0), (29.1, 31.7), atol=0.5)
    assert (expected[0, 0] == 255).all()  # on white


def test_an_orbit_goes_through_the_loop_upscale_and_interpolation_stages(svd, tmp_path):
    """Issue 21.5: the post stages take an SV3D orbit as any clip: 21 views, crossfaded over 2 (19), upscaled twice,
    interpolated as a loop (19 x 2, the wrap included) at twice the frame rate."""
    out = tmp_path / "orbit"
    r = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny-sv3d", "--size", "64x64", "--steps", "2",
            "--seed", "3", "--loop", "crossfade", "--loop-frames", "2", "--upscale", "2", "--upscaler", "tiny-upscaler",
            "--interpolate", "2", "--interpolator", "tiny-rife", "--format", "frames", "--out", out)  # fmt: skip
    assert r.code == 0, r.err
    frames = sorted(out.glob("frame_*.png"))
    assert len(frames) == 38 and Image.open(frames[0]).size == (128, 128)
    recipe = json.loads((tmp_path / "orbit.frames.json").read_text())
    assert recipe["output"]["fps"] == 20 and recipe["settings"]["frames"] == 21
    assert [stage["stage"] for stage in recipe["stages"][2:5]] == ["loop", "upscale", "interpolate"]
    assert recipe["stages"][2]["frames"] == 19 and recipe["stages"][4]["loop"] is True


def test_remove_background_cuts_the_object_out_as_stabilitys_script_does_and_replays(svd, tmp_path):
    """Issue 21.4: an opaque photo is shrunk to fit 768x768, cut out by rembg's u2net session with alpha matting and
    recentred on white, as simple_video_sample.py does it (written down below from the script, with rembg's own
    functions on the same model file); the recipe records it and its replay gives the same frames."""
    photo = np.full((800, 1000, 3), 245, dtype=np.uint8)
    photo[100:400, 80:380] = (40, 50, 110)  # a dark object on a light background, off centre
    Image.fromarray(photo).save(tmp_path / "mug.png")
    threads = torch.get_num_threads()
    r = svd("animate", tmp_path / "mug.png", "--model", "tiny-sv3d", "--size", "64x64", "--steps", "1", "--seed", "2",
            "--remove-background", "--background-remover", "tiny-u2net", "--format", "frames", "--out",
            tmp_path / "mug")  # fmt: skip
    assert r.code == 0, r.err
    # rembg's alpha matting (pymatting, numba) resets the OpenMP threads torch uses; svd keeps torch's count, which
    # decides the frames on the CPU.
    assert torch.get_num_threads() == threads

    from rembg import remove
    from rembg.sessions.u2net import U2netSession

    from svd_cli.models.tiny import ensure_tiny_file

    class ScriptSession(U2netSession):  # rembg's u2net session on svd's built-in file instead of its download
        @classmethod
        def download_models(cls, *args, **kwargs):
            return str(ensure_tiny_file("tiny-u2net"))

    image = Image.open(tmp_path / "mug.png")
    image.thumbnail([768, 768], Image.Resampling.LANCZOS)
    image = remove(image.convert("RGBA"), alpha_matting=True, session=ScriptSession("u2net", None))
    torch.set_num_threads(threads)  # as svd does: rembg imported here reset them, for this worker's later tests too
    expected = script_preparation(image, 64)
    frames = sorted((tmp_path / "mug").glob("frame_*.png"))
    assert np.array_equal(np.asarray(Image.open(frames[-1])), expected)
    dark = np.argwhere(expected.sum(axis=-1) < 400)
    assert np.allclose(dark.mean(axis=0), (31.5, 31.5), atol=1.5) and (expected[0, 0] == 255).all()  # centred
    recipe = json.loads((tmp_path / "mug.frames.json").read_text())
    assert recipe["settings"]["remove_background"] is True and recipe["settings"]["background_remover"] == "tiny-u2net"
    assert recipe["stages"][0]["background_removed"]["model"] == "tiny-u2net" and recipe["stages"][0]["recentred"]

    r = svd("animate", "--recipe", tmp_path / "mug.frames.json", "--out", tmp_path / "again")
    assert r.code == 0, r.err
    again = sorted((tmp_path / "again").glob("frame_*.png"))
    assert len(again) == 21 and all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
                                    for a, b in zip(frames, again, strict=True))  # fmt: skip
