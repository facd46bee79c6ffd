"""Drafts finished later (--draft, --keep-latents, svd finish): the kept latents decoded with the full decoder give
the frames of the run without the draft; a draft that cannot be finished is named in one line and left alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import EXAMPLES

ARGS = ("--model", "tiny", "--frames", "2", "--steps", "2", "--size", "128x64", "--format", "frames")


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))])


def _files(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_draft_has_the_frames_of_the_full_run(svd, tiny_dir, tmp_path):
    photo = shutil.copy(EXAMPLES / "coffee.png", tmp_path / "coffee.png")
    draft, full = tmp_path / "draft", tmp_path / "full"
    result = svd("animate", photo, *ARGS, "--seed", "3", "--decoder", "tiny-taesd", "--keep-latents", "--out", draft)
    assert result.code == 0, result.err
    assert (tmp_path / "draft.latents.safetensors").is_file()
    drafted = _frames(draft)
    result = svd("animate", photo, *ARGS, "--seed", "3", "--out", full)
    assert result.code == 0, result.err
    assert not np.array_equal(drafted, _frames(full))  # the tiny decoder's frames are not the VAE's

    result = svd("finish", draft)
    assert result.code == 0, result.err
    assert np.array_equal(_frames(draft), _frames(full))
    assert not (tmp_path / "draft.latents.safetensors").exists()
    finished = json.loads((tmp_path / "draft.frames.json").read_text())
    direct = json.loads((tmp_path / "full.frames.json").read_text())
    assert finished["settings"] == direct["settings"]  # no decoder, no kept latents: what the full run records
    assert finished["stages"][1]["from_kept_latents"] is True
    # Finishing it again does nothing.
    result = svd("finish", draft)
    assert result.code == 0 and "skipped" in result.err and "already finished" in result.err, result.err

    # A script gets the latents the frames were decoded from.
    import svd_cli

    model = svd_cli.load("tiny", device="cpu", frames=2, steps=2, size=(128, 64))
    assert model.animate_image(photo, seed=3, keep_latents=True).latents.shape == (1, 2, 4, 8, 16)
    assert model.animate_image(photo, seed=3).latents is None


def test_drafts_that_cannot_be_finished_are_named_and_left_alone(svd, tiny_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(EXAMPLES / "coffee.png", photos / "coffee.png")
    out = tmp_path / "out"
    result = svd("animate", photos / "coffee.png", *ARGS, "--seeds", "3,4,5", "--draft", "--decoder", "tiny-taesd",
                 "--out", f"{out}/")  # fmt: skip
    assert result.code == 0, result.err
    latents = {seed: out / f"coffee-{seed}.latents.safetensors" for seed in (3, 4, 5)}
    recipe = json.loads((out / "coffee-5.frames.json").read_text())
    assert recipe["settings"]["decoder"] == "tiny-taesd" and recipe["settings"]["keep_latents"] is True
    from svd_cli.options import assemble_request

    replayed = assemble_request([], explicit={}, recipe=recipe)  # a draft's recipe replays as a draft
    assert (replayed.decoder, replayed.keep_latents) == ("tiny-taesd", True)
    # A truncated file, and another draft's latents: one line each; the third draft is finished.
    latents[3].write_bytes(latents[3].read_bytes()[:-64])
    shutil.copy(latents[5], latents[4])
    before = _files(out)
    result = svd("finish", out)
    assert result.code == 1, result.err
    assert f"{latents[3]}: unreadable kept latents" in result.err, result.err
    assert f"{latents[4]}: kept for other work than the recipe of {out / 'coffee-4'} says" in result.err
    assert "1 done, 0 skipped, 2 failed" in result.err
    after = _files(out)
    for seed in (3, 4):
        for name in (f"coffee-{seed}.frames.json", f"coffee-{seed}.latents.safetensors"):
            assert after[Path(name)] == before[Path(name)]
        for frame in (out / f"coffee-{seed}").iterdir():
            assert after[frame.relative_to(out)] == before[frame.relative_to(out)]

    # A video made without a draft has nothing to finish from.
    result = svd("finish", out / "coffee-5")
    assert result.code == 0 and "already finished" in result.err, result.err
    result = svd("animate", photos / "coffee.png", *ARGS, "--seed", "3", "--out", tmp_path / "plain")
    result = svd("finish", tmp_path / "plain")
    assert result.code == 1 and "not a draft (made without --draft or --keep-latents)" in result.err, result.err

    # What a draft cannot be, refused before any work.
    result = svd("animate", photos / "coffee.png", *ARGS, "--draft", "--decoder", "full")
    assert result.code == 2 and "--draft decodes with a tiny decoder and --decoder full asks for" in result.err
    result = svd("animate", photos / "coffee.png", *ARGS, "--keep-latents", "--extend", "1")
    assert result.code == 2 and "--keep-latents keeps one clip's latents, and --extend" in result.err, result.err
