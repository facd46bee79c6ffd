"""The provenance watermark: in the tiny model's real frames, written by svd's writers, found by `svd watermark check`.

Until `svd animate` embeds it itself, the tests animate to PNG frames through the CLI, mark them with the stage
(`watermark_clip`) and write them with svd's own writer, as the animate command will.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from .conftest import EXAMPLES, psnr, read_video


@pytest.fixture(scope="module")
def tiny_frames(tiny_dir, tmp_path_factory) -> np.ndarray:
    """Six frames of the tiny model's video at 448x256 (large enough to hold the mark), read back from its PNGs."""
    from svd_cli.cli import main

    out = tmp_path_factory.mktemp("tiny")
    args = ["animate", EXAMPLES / "astronaut.png", "--model", "tiny", "--frames", "6", "--steps", "2", "--fps", "8",
            "--size", "448x256", "--seed", "3", "--no-watermark", "--format", "frames", "--out", f"{out}/",
            "--quiet"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((out / "astronaut").glob("*.png"))])


@pytest.fixture(scope="module")
def videos(tiny_frames, tmp_path_factory) -> dict:
    """The same frames written with and without the mark, as MP4 and GIF."""
    from svd_cli.io.video import write_frames
    from svd_cli.stages import Clip
    from svd_cli.stages.watermark import watermark_clip

    folder = tmp_path_factory.mktemp("videos")
    marked = watermark_clip(Clip(tiny_frames, fps=8, stages=[{"stage": "animate"}], warnings=["kept"]))
    paths = {"clip": marked}
    for fmt in ("mp4", "gif"):
        paths[f"marked.{fmt}"] = write_frames(marked.frames, folder / f"marked.{fmt}", 8, fmt)
        paths[f"plain.{fmt}"] = write_frames(tiny_frames, folder / f"plain.{fmt}", 8, fmt)
    return paths


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_check_finds_the_mark_in_a_written_video_and_not_in_one_without(svd, videos, fmt):
    marked, plain = videos[f"marked.{fmt}"], videos[f"plain.{fmt}"]
    r = svd("watermark", "check", marked)
    assert r.code == 0, r.out + r.err
    assert r.out.startswith(f"{marked}: carries the watermark (")
    r = svd("watermark", "check", plain)
    assert r.code == 1, r.out + r.err
    assert r.out.startswith(f"{plain}: no watermark found (0 of 6 frames")
    r = svd("watermark", "check", marked, plain, "--json")
    assert r.code == 1
    found, absent = (json.loads(line) for line in r.out.splitlines())
    # Measured on this clip: marked frames match 43-47 of the 48 bits in the MP4 and 35-45 in the GIF, the message
    # voted over the frames 48 in both; unmarked frames 16-29, voted 23-24. The threshold is 37 (stages/watermark.py).
    assert found["carries"] and found["message_match"] >= 44 and found["bit_accuracy"] > 0.75
    assert found["frames_marked"] >= (5 if fmt == "mp4" else 3)
    assert not absent["carries"] and absent["frames_marked"] == 0 and absent["bit_accuracy"] < 0.7
    assert absent["message_match"] <= 32


def test_animate_marks_its_videos_unless_told_not_to(svd, tiny_dir, tmp_path):
    """The issue's test: `svd watermark check` finds the mark in what `svd animate` writes, not with --no-watermark;
    too small a video is written unmarked with a note."""
    fast = ["--model", "tiny", "--frames", "4", "--steps", "1", "--seed", "3", "--size", "448x256"]
    marked, plain = tmp_path / "marked.mp4", tmp_path / "plain.mp4"
    assert svd("animate", EXAMPLES / "astronaut.png", *fast, "--out", marked).code == 0
    assert svd("animate", EXAMPLES / "astronaut.png", *fast, "--no-watermark", "--out", plain).code == 0
    r = svd("watermark", "check", marked)
    assert r.code == 0 and r.out.startswith(f"{marked}: carries the watermark (4 of 4 frames"), r.out
    r = svd("watermark", "check", plain)
    assert r.code == 1 and r.out.startswith(f"{plain}: no watermark found (0 of 4 frames"), r.out
    stages = json.loads(marked.with_name("marked.mp4.json").read_text())["stages"]
    assert stages[-2] == {"stage": "watermark", "method": "dwtDct", "message": "0xb3ec907bb19e", "bits": 48,
                          "applied": True}  # fmt: skip
    r = svd("animate", EXAMPLES / "astronaut.png", *fast, "--size", "256x128", "--out", tmp_path / "small.mp4")
    assert r.code == 0
    assert "Note: frames of 256x128 are too small to carry the watermark, which needs 65,536 pixels a frame; " \
           "written without it" in r.err  # fmt: skip


def test_the_mark_is_invisible_and_recorded(videos, tiny_frames):
    clip = videos["clip"]
    assert clip.fps == 8 and clip.warnings == ["kept"]
    assert clip.stages == [{"stage": "animate"}, {"stage": "watermark", "method": "dwtDct",
                           "message": "0xb3ec907bb19e", "bits": 48, "applied": True}]  # fmt: skip
    assert not np.array_equal(clip.frames, tiny_frames)
    # Measured: 42.0 dB before encoding. Read back from the MP4s, against the frames the model made: 28.85 dB with
    # the mark, 28.98 dB without (the tiny model's noise-like frames are hard for H.264 at any rate).
    assert psnr(clip.frames, tiny_frames) > 39
    with_mark, without = (psnr(read_video(videos[name])[1], tiny_frames) for name in ("marked.mp4", "plain.mp4"))
    assert with_mark > without - 0.5


def test_frames_marked_by_the_reference_encoder_are_recognised(svd, tiny_frames, tmp_path):
    """Stability's scripts mark with invisible-watermark's own encoder: svd finds their mark, not just its own."""
    from imwatermark import WatermarkEncoder

    from svd_cli.io.video import write_frames
    from svd_cli.stages.watermark import BITS

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(BITS))
    theirs = np.stack([encoder.encode(np.ascontiguousarray(f[..., ::-1]), "dwtDct")[..., ::-1] for f in tiny_frames])
    folder = write_frames(theirs, tmp_path / "theirs", 8, "frames")
    r = svd("watermark", "check", folder)
    assert r.code == 0, r.out + r.err
    assert "carries the watermark (6 of 6 frames" in r.out


def test_frames_too_small_are_written_unmarked_with_a_warning(svd, tiny_frames, tmp_path):
    from svd_cli.io.video import write_frames
    from svd_cli.stages import Clip
    from svd_cli.stages.watermark import watermark_clip

    small = np.ascontiguousarray(tiny_frames[:, :128, :256])  # 32,768 pixels: invisible-watermark needs 65,536
    clip = watermark_clip(Clip(small, fps=8))
    assert np.array_equal(clip.frames, small)
    assert clip.warnings == []
    assert clip.stages[-1]["applied"] is False
    assert clip.stages[-1]["reason"] == "frames of 256x128 are too small to carry the watermark, which needs 65,536 " \
                                        "pixels a frame"  # fmt: skip
    video = write_frames(clip.frames, tmp_path / "small.mp4", 8, "mp4")
    r = svd("watermark", "check", video)
    assert r.code == 1, r.out + r.err
    assert r.out.strip() == f"{video}: no watermark: frames of 256x128 are too small to carry the watermark, which " \
                            "needs 65,536 pixels a frame"  # fmt: skip


def test_a_missing_or_unreadable_file_is_one_sentence_and_exit_2(svd, videos, tmp_path):
    missing, broken = tmp_path / "nowhere.mp4", tmp_path / "notes.mp4"
    broken.write_text("not a video", encoding="utf-8")
    for path in (missing, broken):
        r = svd("watermark", "check", videos["marked.mp4"], path)
        assert r.code == 2, r.out + r.err
        assert r.out.startswith(f"{videos['marked.mp4']}: carries the watermark")  # the good file is still checked
        assert len(r.lines) == 1 and str(path) in r.err and "Traceback" not in r.err
        assert r.err.startswith("svd: error: ") and r.err.strip().endswith(".")


def test_help_explains_the_mark(svd):
    r = svd("watermark", "--help")
    assert r.code == 0
    text = " ".join(r.out.split())
    assert "48-bit message Stability's reference scripts embed" in text and "survives svd's MP4 (H.264)" in text
    assert "watermark" in svd("--help").out
