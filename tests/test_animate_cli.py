"""`svd animate` end to end on the tiny model: files are read back from disk, as a user would check them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from .conftest import EXAMPLES, TINY_FAST, read_video


def test_mp4_has_requested_frames_fps_size_and_codec(svd, tiny_dir, tmp_path):
    out = tmp_path / "coffee.mp4"
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", "7", "--out", out)
    assert r.code == 0, r.err
    meta, frames = read_video(out)
    assert frames.shape == (6, 128, 256, 3)
    assert meta["fps"] == 8.0
    assert meta["codec"] == "h264"
    assert meta["pix_fmt"].startswith("yuv420p")
    assert "bt709" in meta["pix_fmt"]
    # The tiny model's video is noise, but it is not blank: frames carry real content.
    assert frames.std() > 10


def test_sidecar_records_the_full_recipe(svd, tiny_dir, tmp_path):
    out = tmp_path / "coffee.mp4"
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", "7", "--out", out)
    assert r.code == 0, r.err
    recipe = json.loads((tmp_path / "coffee.mp4.json").read_text())
    s = recipe["settings"]
    assert (s["frames"], s["fps"], s["steps"], s["seed"], s["width"], s["height"]) == (6, 8, 2, 7, 256, 128)
    assert s["motion_bucket"] == 127 and s["noise_aug"] == 0.02 and s["fps_conditioning"] == 7
    assert recipe["model"]["name"] == "tiny"
    assert recipe["svd_version"]
    assert recipe["runtime"]["memory"]["profile"] == "high"
    assert recipe["input"]["sha256"] and len(recipe["input"]["sha256"]) == 64


def test_frames_format_writes_numbered_lossless_pngs(svd, tiny_dir, tmp_path):
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", "7", "--format", "frames", "--out", tmp_path)
    assert r.code == 0, r.err
    folder = tmp_path / "coffee"
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:04d}.png" for i in range(1, 7)]
    assert Image.open(pngs[0]).size == (256, 128)
    assert (tmp_path / "coffee.frames.json").is_file()


def test_sidecar_recipe_reproduces_the_video_bit_for_bit(svd, tiny_dir, tmp_path):
    first = tmp_path / "a"
    r = svd("animate", EXAMPLES / "chelsea.png", *TINY_FAST, "--format", "frames", "--out", f"{first}/")
    assert r.code == 0, r.err
    recipe = first / "chelsea.frames.json"
    seed = json.loads(recipe.read_text())["settings"]["seed"]  # a random seed, recorded

    again = tmp_path / "b"
    r = svd("animate", "--recipe", recipe, "--out", f"{again}/")
    assert r.code == 0, r.err
    a = [np.asarray(Image.open(p)) for p in sorted((first / "chelsea").glob("*.png"))]
    b = [np.asarray(Image.open(p)) for p in sorted((again / "chelsea").glob("*.png"))]
    assert len(a) == len(b) == 6
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert json.loads((again / "chelsea.frames.json").read_text())["settings"]["seed"] == seed


def test_recipe_reproduces_mp4_bytes(svd, tiny_dir, tmp_path):
    """Without content credentials (a new signature on every write) the replayed file is the same bit for bit, and
    the recipe records that they were off."""
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--no-credentials", "--out", tmp_path / "a.mp4")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "a.mp4.json").read_text())["settings"]["credentials"] is False
    r = svd("animate", "--recipe", tmp_path / "a.mp4.json", "--out", tmp_path / "b.mp4")
    assert r.code == 0, r.err
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_same_seed_same_frames_other_seed_other_frames(svd, tiny_dir, tmp_path):
    def frames(seed: int, name: str) -> np.ndarray:
        r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", seed, "--format", "frames",
                "--out", tmp_path / name)  # fmt: skip
        assert r.code == 0, r.err
        # --out names the frames folder itself when it does not exist yet.
        return np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / name).glob("*.png"))])

    a, b, c = frames(3, "a"), frames(3, "b"), frames(4, "c")
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_random_seed_is_printed_and_recorded(svd, tiny_dir, tmp_path):
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--out", tmp_path / "x.mp4", "--json")
    assert r.code == 0, r.err
    line = json.loads(r.out.splitlines()[0])
    recipe = json.loads((tmp_path / "x.mp4.json").read_text())
    assert line["seed"] == recipe["settings"]["seed"]
    assert f"seed {line['seed']}" in r.err
    assert recipe["settings"]["seed_fixed"] is False


def test_json_output_has_one_object_per_video(svd, tiny_dir, tmp_path):
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", "1", "--out", tmp_path / "c.mp4", "--json")
    assert r.code == 0, r.err
    objects = [json.loads(line) for line in r.out.splitlines()]
    video, summary = objects
    assert video["path"] == str(tmp_path / "c.mp4")
    assert (video["frames"], video["fps"], video["width"], video["height"]) == (6, 8, 256, 128)
    assert video["model"] == "tiny" and video["steps"] == 2 and video["seconds"] > 0
    assert summary["summary"] is True and summary["done"] == 1


@pytest.mark.parametrize("fmt", ["gif", "webm"])
def test_gif_and_webm(svd, tiny_dir, tmp_path, fmt):
    out = tmp_path / f"c.{fmt}"
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", "1", "--format", fmt, "--out", out)
    assert r.code == 0, r.err
    meta, frames = read_video(out)
    assert frames.shape[0] == 6 and frames.shape[1:3] == (128, 256)


def test_default_output_goes_next_to_the_input(svd, tiny_dir, tmp_path):
    photo = tmp_path / "holiday photo é.png"
    Image.open(EXAMPLES / "coffee.png").save(photo)
    r = svd("animate", photo, *TINY_FAST, "--seed", "1")
    assert r.code == 0, r.err
    assert (tmp_path / "holiday photo é.mp4").is_file()
    assert (tmp_path / "holiday photo é.mp4.json").is_file()
    assert not list(tmp_path.glob(".*partial*")), "no temporary file is left behind"


def test_portrait_input_gets_portrait_size_by_default(tiny_dir):
    from svd_cli.stages.first_frame import target_size

    assert target_size(None, (1024, 576), Image.new("RGB", (427, 640)).size) == (576, 1024)
    assert target_size(None, (1024, 576), Image.new("RGB", (640, 427)).size) == (1024, 576)
    assert target_size((512, 512), (1024, 576), Image.new("RGB", (427, 640)).size) == (512, 512)


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_fit_modes_produce_requested_size(svd, tiny_dir, tmp_path, fit):
    r = svd("animate", EXAMPLES / "rocket.jpg", "--model", "tiny", "--frames", "2", "--steps", "1",
            "--size", "128x64", "--fit", fit, "--format", "frames", "--out", tmp_path)  # fmt: skip
    assert r.code == 0, r.err
    pngs = sorted((tmp_path / "rocket").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (128, 64)


def test_fit_pad_letterboxes_with_background():
    from svd_cli.io.images import fit_image

    tall = Image.new("RGB", (100, 200), (200, 10, 10))
    padded = np.asarray(fit_image(tall, 256, 128, "pad", (0, 0, 255)))
    assert tuple(padded[64, 2]) == (0, 0, 255)  # border
    assert tuple(padded[64, 128])[0] > 150  # picture in the middle
    cropped = np.asarray(fit_image(tall, 256, 128, "crop", (0, 0, 255)))
    assert tuple(cropped[64, 2])[0] > 150  # crop fills the frame


def test_weights_toml_defaults_are_used(svd, tiny_dir, tmp_path):
    r = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--size", "128x64", "--seed", "1",
            "--out", tmp_path / "d.mp4")  # fmt: skip
    assert r.code == 0, r.err
    s = json.loads((tmp_path / "d.mp4.json").read_text())["settings"]
    from svd_cli.registry import get_entry

    entry = get_entry("tiny")
    d = entry.defaults
    assert (s["frames"], s["steps"], s["fps"], s["motion_bucket"]) == (
        d["frames"], d["steps"], d["fps"], d["motion_bucket"],
    )  # fmt: skip


def test_a_newline_or_markup_in_a_file_name_cannot_break_or_forge_an_output_line(svd, tiny_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a\nb.png", "[red]c.png"):
        (folder / name).write_bytes((EXAMPLES / "coffee.png").read_bytes())
    (folder / "d\n✓ e.png").write_text("not a picture")
    small = ["--model", "tiny", "--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "1"]
    r = svd("animate", folder, *small, "--out", tmp_path / "out/")
    assert r.code == 1
    done = sorted(line for line in r.lines if line.startswith(("✓", "✗")))
    assert done[0].startswith(f"✓ {tmp_path / 'out'}/[red]c.mp4  ")
    assert done[1].startswith(f"✓ {tmp_path / 'out'}/a\\nb.mp4  ")
    assert done[2].startswith(f"✗ {folder}/d\\n✓ e.png: ") and len(done) == 3, r.err
    assert (tmp_path / "out" / "a\nb.mp4").is_file()
