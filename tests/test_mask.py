"""Cinemagraphs (--mask): only the region a mask marks moves; every pixel outside it is the fitted photo's."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageOps

from .conftest import EXAMPLES

PHOTO = EXAMPLES / "coffee.png"  # 600x400
ARGS = ("--model", "tiny", "--frames", "3", "--steps", "2", "--size", "128x64", "--seed", "3", "--format", "frames")
# The mask's edge, at the video's size: column 64. Past it, the feather (4 px by default) and the resampling of a
# 600x400 mask to 128x64 (Lanczos reaches 3 output pixels) leave every pixel the photo's.
STILL_FROM = 64 + 4 + 3


def mask_file(path, white_columns=slice(0, 300), size=(600, 400), alpha=False):
    levels = np.zeros((size[1], size[0]), np.uint8)
    levels[:, white_columns] = 255
    if alpha:  # the mask as a transparent layer: opaque where it may move
        Image.fromarray(np.dstack([np.full((*levels.shape, 3), 90, np.uint8), levels]), "RGBA").save(path)
    else:
        Image.fromarray(levels).save(path)
    return path


def fitted_photo() -> np.ndarray:
    with Image.open(PHOTO) as photo:
        return np.asarray(ImageOps.fit(photo.convert("RGB"), (128, 64), Image.Resampling.LANCZOS)).astype(int)


def read_frames(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(png)).astype(int) for png in sorted(folder.glob("*.png"))]


def test_only_the_white_half_moves_and_the_recipe_holds_the_mask(svd, tiny_dir, tmp_path):
    mask = mask_file(tmp_path / "half.png", alpha=True)
    result = svd("animate", PHOTO, *ARGS, "--mask", mask, "--out", f"{tmp_path}/")
    assert result.code == 0, result.err
    frames, photo = read_frames(tmp_path / "coffee"), fitted_photo()
    assert len(frames) == 3
    for frame in frames:
        assert np.abs(frame[:, STILL_FROM:] - photo[:, STILL_FROM:]).max() == 0
    assert max(np.abs(frame[:, :60] - photo[:, :60]).mean() for frame in frames) > 5
    recipe = json.loads((tmp_path / "coffee.frames.json").read_text())
    assert recipe["input"]["mask"]["path"] == str(mask.resolve()) and len(recipe["input"]["mask"]["sha256"]) == 64

    # The same command again is done; another mask under the same name is another video.
    again = svd("animate", PHOTO, *ARGS, "--mask", mask, "--out", f"{tmp_path}/")
    assert again.code == 0 and "already done" in again.err, again.err
    mask_file(mask, white_columns=slice(0, 200))
    changed = svd("animate", PHOTO, *ARGS, "--mask", mask, "--out", f"{tmp_path}/")
    assert changed.code == 0 and "mask changed" in changed.err, changed.err


def test_masks_that_cannot_work_get_one_line(svd, tiny_dir, tmp_path):
    black = mask_file(tmp_path / "black.png", white_columns=slice(0, 0))
    result = svd("animate", PHOTO, *ARGS, "--mask", black, "--out", f"{tmp_path}/")
    assert result.code == 1 and "is black everywhere" in result.err and "paint white" in result.err, result.err

    wide = mask_file(tmp_path / "wide.png", size=(400, 100))
    result = svd("animate", PHOTO, *ARGS, "--mask", wide, "--out", f"{tmp_path}/")
    assert result.code == 1 and "is 400x100 and" in result.err and "600x400" in result.err, result.err

    text = tmp_path / "mask.txt"
    text.write_text("white on the left")
    result = svd("animate", PHOTO, *ARGS, "--mask", text, "--out", f"{tmp_path}/")
    assert result.code == 2 and f"--mask {text}: not an image Pillow can read" in result.err, result.err
    assert result.err.count("\n") <= 2 and "Traceback" not in result.err

    result = svd("animate", PHOTO, *ARGS, "--mask", tmp_path / "gone.png", "--out", f"{tmp_path}/")
    assert result.code == 2 and "gone.png: file not found" in result.err, result.err

    result = svd("animate", "--prompt", "a lake", "--model", "tiny", "--mask", black)
    assert result.code == 2 and "--mask" in result.err and "give the photo" in result.err, result.err
    assert not (tmp_path / "coffee").exists()


def test_an_all_white_mask_is_plain_animation(svd, tiny_dir, tmp_path):
    white = mask_file(tmp_path / "white.png", white_columns=slice(0, 600))
    masked = svd("animate", PHOTO, *ARGS, "--mask", white, "--out", tmp_path / "masked")
    assert masked.code == 0 and "white everywhere: every pixel may move" in masked.err, masked.err
    plain = svd("animate", PHOTO, *ARGS, "--out", tmp_path / "plain")
    assert plain.code == 0, plain.err
    masked_frames, plain_frames = read_frames(tmp_path / "masked"), read_frames(tmp_path / "plain")
    assert len(masked_frames) == 3 and all(
        np.array_equal(a, b) for a, b in zip(masked_frames, plain_frames, strict=True)
    )


def test_every_clip_of_a_long_looped_video_keeps_the_mask(svd, tiny_dir, tmp_path):
    mask = mask_file(tmp_path / "half.png")
    result = svd("animate", PHOTO, *ARGS, "--frames", "2", "--extend", "1", "--loop", "bounce", "--mask", mask,
                 "--out", tmp_path / "long")  # fmt: skip
    assert result.code == 0, result.err
    frames, photo = read_frames(tmp_path / "long"), fitted_photo()
    assert len(frames) == 4  # 2 + 1 frames, bounced back (the turning frame once)
    assert all(np.abs(frame[:, STILL_FROM:] - photo[:, STILL_FROM:]).max() == 0 for frame in frames)


def test_a_folder_of_photos_takes_each_its_own_mask_by_name(svd, tiny_dir, tmp_path):
    import shutil

    photos = tmp_path / "photos"
    (photos / "masks").mkdir(parents=True)  # inside the input folder: never taken for photos
    for name in ("left", "right", "none"):
        shutil.copy(PHOTO, photos / f"{name}.png")
    mask_file(photos / "masks" / "left.png")
    mask_file(photos / "masks" / "right.png", white_columns=slice(300, 600))
    result = svd("animate", photos, *ARGS, "--frames", "2", "--masks", photos / "masks", "--out", tmp_path / "out/")
    assert result.code == 1, result.err
    assert "holds no mask named none (a picture such as none.png)" in result.err
    assert "2 done, 0 skipped, 1 failed" in result.err, result.err
    photo = fitted_photo()
    for name, still in (("left", slice(STILL_FROM, None)), ("right", slice(0, 64 - 7))):
        frames = read_frames(tmp_path / "out" / name)
        assert all(np.abs(frame[:, still] - photo[:, still]).max() == 0 for frame in frames), name
        recipe = json.loads((tmp_path / "out" / f"{name}.frames.json").read_text())
        assert recipe["input"]["mask"]["path"] == str((photos / "masks" / f"{name}.png").resolve())


def test_svd_plan_counts_the_masks_extra_encode_and_the_same_steps(svd, tmp_path):
    mask = mask_file(tmp_path / "half.png")
    rows = {}
    for name, extra in (("plain", ("--memory", "high")), ("masked", ("--mask", mask))):
        plan = svd("plan", "--model", "tiny", "--frames", "3", "--size", "128x64", *extra, "--json")
        assert plan.code == 0, plan.err
        rows[name] = {row["name"]: row for row in json.loads(plan.out)["rows"]}
    plain, masked = rows["plain"]["high"]["stage_flops"], rows["masked"]["high"]["stage_flops"]
    assert masked["step"] == plain["step"] and masked["encode"] > 1.5 * plain["encode"]
    assert list(rows["plain"]) == ["high"]  # --memory names the one profile to simulate
    assert list(rows["masked"]) == ["high", "balanced", "low", "min"]  # diffusers has no masked sampling
