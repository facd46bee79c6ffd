"""`svd inpaint`: the masked region of a video made again, every other pixel of every frame kept."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from svd_cli.io.video import read_frames, write_frames

from .conftest import EXAMPLES

BOX = (slice(16, 48), slice(40, 88))  # rows, columns of the region made again in a 128x64 video
FEATHER = 4  # the default: the blend reaches this far past the box


def make_clip(path, count=12):
    """A 12-frame 128x64 H.264 clip of a photo panning left, written the way svd writes its videos."""
    with Image.open(EXAMPLES / "coffee.png") as photo:
        wide = np.asarray(photo.convert("RGB").resize((160, 64)))
    write_frames(np.stack([wide[:, 2 * i : 2 * i + 128] for i in range(count)]), path, 8, "mp4")
    return path


def box_mask(path, size=(128, 64), box=BOX):
    levels = np.zeros((size[1], size[0]), np.uint8)
    levels[box] = 255
    Image.fromarray(levels).save(path)
    return path


def outside_the_box() -> np.ndarray:
    keep = np.ones((64, 128), bool)
    keep[BOX[0].start - FEATHER : BOX[0].stop + FEATHER, BOX[1].start - FEATHER : BOX[1].stop + FEATHER] = False
    return keep


def test_the_box_is_made_again_and_every_other_pixel_is_the_input(svd, tiny_dir, tmp_path):
    clip, mask = make_clip(tmp_path / "clip.mp4"), box_mask(tmp_path / "box.png")
    result = svd("inpaint", clip, "--mask", mask, "--model", "tiny", "--steps", "2", "--format", "frames")
    assert result.code == 0, result.err
    assert "Window 2/2: frames 8-12" in result.err  # the tiny model makes 8 frames: two windows
    made = np.stack(list(read_frames(tmp_path / "clip.inpainted"))).astype(int)
    # The input decoded the same way (ffmpeg, rgb24): outside the box the tolerance is 0 levels, the codec's
    # rounding is the input's own.
    given = np.stack(list(read_frames(clip))).astype(int)
    assert made.shape == given.shape == (12, 64, 128, 3)
    assert np.abs(made - given)[:, outside_the_box()].max() == 0
    assert np.abs(made - given)[:, BOX[0], BOX[1]].mean() > 5
    recipe = json.loads((tmp_path / "clip.inpainted.frames.json").read_text())
    assert recipe["command"] == "inpaint" and recipe["output"]["fps"] == 8 and recipe["output"]["frames"] == 12
    assert len(recipe["input"]["sha256"]) == 64 and len(recipe["input"]["mask"]["sha256"]) == 64

    again = svd("inpaint", clip, "--mask", mask, "--model", "tiny", "--steps", "2", "--format", "frames")
    assert again.code == 0 and "already done" in again.err, again.err
    replay = svd("animate", "--recipe", tmp_path / "clip.inpainted.frames.json")
    assert replay.code == 2 and "run svd inpaint again" in replay.err, replay.err


def test_a_folder_of_masks_moves_the_region_frame_by_frame(svd, tiny_dir, tmp_path):
    clip, masks = make_clip(tmp_path / "clip.mp4", count=4), tmp_path / "masks"
    masks.mkdir()
    for i in range(4):
        box_mask(masks / f"{i:02}.png", box=(slice(0, 16), slice(16 * i, 16 * i + 16)))
    result = svd("inpaint", clip, "--mask", masks, "--model", "tiny", "--steps", "1", "--mask-feather", "0",
                 "--format", "frames", "--out", tmp_path / "moved")  # fmt: skip
    assert result.code == 0, result.err
    made = np.stack(list(read_frames(tmp_path / "moved"))).astype(int)
    given = np.stack(list(read_frames(clip))).astype(int)
    for i in range(4):
        kept = np.ones((64, 128), bool)
        kept[0:16, 16 * i : 16 * i + 16] = False
        assert np.abs(made[i] - given[i])[kept].max() == 0
        assert np.abs(made[i] - given[i])[~kept].mean() > 5


def test_what_cannot_be_inpainted_gets_one_line(svd, tiny_dir, tmp_path):
    clip, mask = make_clip(tmp_path / "clip.mp4", count=3), box_mask(tmp_path / "box.png")
    cases = {
        "black everywhere: nothing to fill": ["--mask", box_mask(tmp_path / "black.png", box=(slice(0), slice(0)))],
        "white everywhere: that is a new video": ["--mask", box_mask(tmp_path / "white.png", box=(slice(None),) * 2)],
        "is 64x64 and the video 128x64": ["--mask", box_mask(tmp_path / "square.png", size=(64, 64))],
        "is the input video; svd never replaces it": ["--mask", mask, "--out", clip],
        "has 2 frames and the video 3": ["--mask", make_clip(tmp_path / "masks.mp4", count=2)],
    }
    for message, args in cases.items():
        result = svd("inpaint", clip, *args, "--model", "tiny")
        assert result.code == 2 and message in result.err and "Traceback" not in result.err, (message, result.err)
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    result = svd("inpaint", text, "--mask", mask, "--model", "tiny")
    assert result.code == 2 and "not a picture or video ffmpeg can decode" in result.err, result.err
    assert sorted(p.name for p in tmp_path.iterdir() if "inpainted" in p.name) == []


def test_a_video_of_any_size_is_inpainted_at_its_own_size(svd, tiny_dir, tmp_path):
    # 80x48 (sides not multiples of 64, as 1280x720 is not): made at 128x64, its added pixels kept, cut back.
    with Image.open(EXAMPLES / "coffee.png") as photo:
        wide = np.asarray(photo.convert("RGB").resize((84, 48)))
    clip = tmp_path / "small.mp4"
    write_frames(np.stack([wide[:, i : i + 80] for i in range(3)]), clip, 8, "mp4")
    box = (slice(8, 40), slice(20, 60))
    result = svd("inpaint", clip, "--mask", box_mask(tmp_path / "box.png", size=(80, 48), box=box), "--model", "tiny",
                 "--steps", "1", "--mask-feather", "0", "--format", "frames")  # fmt: skip
    assert result.code == 0, result.err
    made = np.stack(list(read_frames(tmp_path / "small.inpainted"))).astype(int)
    given = np.stack(list(read_frames(clip))).astype(int)
    assert made.shape == given.shape == (3, 48, 80, 3)
    kept = np.ones((48, 80), bool)
    kept[box] = False
    assert np.abs(made - given)[:, kept].max() == 0 and np.abs(made - given)[:, ~kept].mean() > 5
    assert json.loads((tmp_path / "small.inpainted.frames.json").read_text())["stages"][0]["grown_to"] == [128, 64]


def test_several_videos_share_one_model_load(svd, tiny_dir, tmp_path):
    clips = [make_clip(tmp_path / f"{name}.mp4", count=3) for name in ("a", "b")]
    mask = box_mask(tmp_path / "box.png")
    result = svd("inpaint", *clips, "--mask", mask, "--model", "tiny", "--steps", "1", "--format", "frames")
    assert result.code == 0, result.err
    assert result.err.count("Loading model") == 1 and "2 done, 0 skipped, 0 failed" in result.err, result.err
    assert all(len(list((tmp_path / f"{name}.inpainted").glob("*.png"))) == 3 for name in ("a", "b"))
    one_out = svd("inpaint", *clips, "--mask", mask, "--model", "tiny", "--out", tmp_path / "x.mp4")
    assert one_out.code == 2 and "--out names one output and this run inpaints 2 videos" in one_out.err
