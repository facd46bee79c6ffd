"""Model families are plug-ins: a family defined outside svd_cli, registered at run time, animates end to end."""

from __future__ import annotations

import json
import math

import numpy as np
from PIL import Image
from safetensors import safe_open

from .conftest import EXAMPLES


def test_a_family_registered_at_run_time_animates_through_the_library_and_the_cli(svd, tmp_path, monkeypatch):
    import svd_cli
    from svd_cli.families import FAMILIES

    from .toy_family import Toy, build_toy_model

    toy = Toy()
    monkeypatch.setitem(FAMILIES, "toy", toy)
    folder = build_toy_model(tmp_path / "toy-model")

    # The library: the folder is recognised by its pipeline class, loaded through the family, and animated
    # with the family's defaults (3 frames at 8 fps) and its conditioning and denoiser.
    model = svd_cli.load(str(folder), device="cpu")
    video = model.animate_image(Image.open(EXAMPLES / "coffee.png"), seed=1)
    assert (video.frame_count, video.fps, video.width, video.height) == (3, 8, 128, 64)
    assert video.frames.shape == (3, 64, 128, 3) and video.frames.std() > 0
    assert toy.denoiser_calls >= 2  # the family's own denoiser ran each of its 2 steps

    # The command line: the same family through `svd animate`, the same frames read back from the written PNGs.
    out = tmp_path / "cli"
    result = svd("animate", EXAMPLES / "coffee.png", "--model", folder, "--seed", "1", "--format", "frames",
                 "--device", "cpu", "--out", f"{out}/")  # fmt: skip
    assert result.code == 0, result.err
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "coffee").glob("*.png"))])
    assert np.array_equal(frames, video.frames)
    assert json.loads((out / "coffee.frames.json").read_text())["settings"]["fps"] == 8

    # Masked sampling asks the family only for the picture's clean latents: a cinemagraph of the toy family keeps
    # the right half of every frame (past the mask's edge at column 64 and its 4-pixel feather) the photo's.
    mask = np.zeros((400, 600), np.uint8)
    mask[:, :300] = 255
    Image.fromarray(mask).save(tmp_path / "half.png")
    masked = model.animate_image(EXAMPLES / "coffee.png", seed=1, mask=tmp_path / "half.png", watermark=False)
    still = np.asarray(masked.first_frame)[:, 71:]
    assert all(np.array_equal(frame[:, 71:], still) for frame in masked.frames)
    assert not np.array_equal(masked.frames[-1][:, :60], np.asarray(masked.first_frame)[:, :60])

    # A folder of a family svd does not have is refused by name (text-to-image loaders would not read it).
    monkeypatch.delitem(FAMILIES, "toy")
    result = svd("animate", EXAMPLES / "coffee.png", "--model", folder, "--out", tmp_path / "no.mp4")
    assert result.code != 0 and "text-to-image model" in result.err and not (tmp_path / "no.mp4").exists()


def test_svd_plan_simulates_a_family_registered_at_run_time_from_its_own_components(svd, tmp_path, monkeypatch):
    from svd_cli.families import FAMILIES

    from .toy_family import Toy, build_toy_model

    monkeypatch.setitem(FAMILIES, "toy", Toy())
    folder = build_toy_model(tmp_path / "toy-model")
    result = svd("plan", "--model", folder, "--memory", "low", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    # The family's defaults (3 frames, 2 steps, 128x64).
    assert (report["frames"], report["steps"], report["width"], report["height"]) == (3, 2, 128, 64)
    assert [row["name"] for row in report["rows"]] == ["low"]
    # Built by the family: its UNet and VAE (no image encoder), each parameter in fp16.
    config = json.loads((folder / "unet" / "config.json").read_text())
    assert config["_class_name"] == "UNetSpatioTemporalConditionModel" and not (folder / "image_encoder").exists()
    count = 0
    for part in ("unet", "vae"):
        with safe_open(folder / part / "diffusion_pytorch_model.safetensors", "pt") as weights:
            count += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    assert all(row["weights_bytes"] == 2 * count for row in report["rows"])
    assert all(row["peak_bytes"] > row["weights_bytes"] for row in report["rows"])
