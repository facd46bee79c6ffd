"""The interpolate stage: more frames over the same motion, with moving things where they belong in between.

Measured with the chosen filter (16x16 square moving 12 px right and 4 px down per frame): the bright square's
centroid is within 0.34 px (x2), 0.55 px (x3) and 0.34 px (x4) of its true in-between position, and at least 96%,
86% and 96% of the square stays at full brightness (block edges soften a little). A crossfade of the same frames
keeps only the 19% where the two squares overlap (at x2 that overlap is centred on the midpoint by symmetry, so the
area is what exposes it) and puts it 2.1 px (x3) and 3.2 px (x4) off.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from svd_cli.errors import OptionError, SvdError, ref
from svd_cli.stages import Clip
from svd_cli.stages.interpolate import interpolate_clip

from .conftest import EXAMPLES, Recorder, read_video

BACKGROUND, SIDE, VELOCITY = 128, 16, (12, 4)
BRIGHT = BACKGROUND + 0.75 * (255 - BACKGROUND)  # three quarters of the way from the background to white


def square_clip(positions: list[tuple[int, int]], size=(128, 96)) -> Clip:
    """A white square at each (x, y) on grey."""
    frames = np.full((len(positions), size[1], size[0], 3), BACKGROUND, np.uint8)
    for frame, (x, y) in zip(frames, positions, strict=True):
        frame[y : y + SIDE, x : x + SIDE] = 255
    return Clip(frames, fps=8)


def pan(count: int, size=(96, 64)) -> np.ndarray:
    """A camera pan over a photo: natural detail moving 5 px right and 2 px down a frame."""
    photo = Image.open(EXAMPLES / "chelsea.png").convert("RGB")
    boxes = [(100 + 5 * k, 60 + 2 * k, 100 + 5 * k + size[0], 60 + 2 * k + size[1]) for k in range(count)]
    return np.stack([np.asarray(photo.crop(box)) for box in boxes])


def straight_line(count: int = 8) -> list[tuple[int, int]]:
    return [(10 + VELOCITY[0] * k, 20 + VELOCITY[1] * k) for k in range(count)]


def bright_square(frame: np.ndarray) -> tuple[float, float, int]:
    """Centroid and area of the pixels at least three quarters white: the square itself, not a ghost of it."""
    ys, xs = np.nonzero(frame.mean(axis=-1) >= BRIGHT)
    if len(xs) == 0:
        return float("nan"), float("nan"), 0
    return float(xs.mean()), float(ys.mean()), len(xs)


def square_errors(original: np.ndarray, interpolated: np.ndarray, factor: int) -> tuple[float, float]:
    """Over all in-between frames: the largest distance of the square from where it should be (pixels), and
    the smallest area of it left, as a fraction of the whole square."""
    worst_error, worst_area = 0.0, 1.0
    for j in range(len(interpolated)):
        k, r = divmod(j, factor)
        if r == 0:
            continue
        t = r / factor
        (ax, ay, _), (bx, by, _) = bright_square(original[k]), bright_square(original[(k + 1) % len(original)])
        x, y, area = bright_square(interpolated[j])
        error = float(np.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay))))
        worst_error = max(worst_error, error if area else float("inf"))
        worst_area = min(worst_area, area / SIDE**2)
    return worst_error, worst_area


def crossfade(frames: np.ndarray, factor: int) -> np.ndarray:
    """What a plain blend would show: each in-between frame a weighted mean of its two neighbours."""
    out = [
        np.round(a * (1 - r / factor) + b * (r / factor)).astype(np.uint8)
        for a, b in zip(frames[:-1], frames[1:], strict=True)
        for r in range(factor)
    ]
    return np.stack([*out, frames[-1]])


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_a_moving_square_is_whole_and_in_between_its_neighbours(factor):
    clip = square_clip(straight_line())
    out = interpolate_clip(clip, factor)
    error, area = square_errors(clip.frames, out.frames, factor)
    print(f"x{factor}: centroid off by at most {error:.2f} px, at least {area:.0%} of the square at full brightness")
    assert error <= 1.5
    assert area >= 0.8


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_a_crossfade_fails_the_moving_square_test(factor):
    clip = square_clip(straight_line())
    error, area = square_errors(clip.frames, crossfade(clip.frames, factor), factor)
    print(f"crossfade x{factor}: centroid off by {error:.2f} px, {area:.0%} of the square at full brightness")
    assert area < 0.8 and (factor == 2 or error > 1.5)


def test_a_loop_gets_in_between_frames_across_the_wrap_around():
    # Out and back at a constant 12 px a frame, so the last frame flows into the first like any other pair.
    positions = [(10 + 12 * k, 40) for k in (0, 1, 2, 3, 4, 3, 2, 1)]
    clip = square_clip(positions)
    out = interpolate_clip(clip, 2, loop=True)
    assert len(out.frames) == 16 and out.fps == 16
    assert np.array_equal(out.frames[0::2], clip.frames)
    error, area = square_errors(clip.frames, out.frames, 2)
    assert error <= 1.5 and area >= 0.8
    assert bright_square(out.frames[-1])[0] == pytest.approx(10 + 6 + (SIDE - 1) / 2, abs=1.5)  # half way home
    assert out.stages[-1]["loop"] is True


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_frame_count_and_rate_keep_the_duration_and_the_originals(factor):
    clip = Clip(pan(6), fps=8, stages=[{"stage": "animate"}], warnings=["one colour"])
    recorder = Recorder()
    out = interpolate_clip(clip, factor, progress=recorder)
    assert len(out.frames) == 5 * factor + 1 and out.fps == 8 * factor
    assert (len(out.frames) - 1) / out.fps == (len(clip.frames) - 1) / clip.fps
    assert np.array_equal(out.frames[::factor], clip.frames)  # bit-exact, not merely close
    assert out.frames.dtype == np.uint8 and out.frames.shape[1:] == clip.frames.shape[1:]
    assert out.stages[0] == {"stage": "animate"} and out.warnings == ["one colour"]
    record = out.stages[-1]
    assert record == {"stage": "interpolate", "factor": factor, "method": "minterpolate", "params": record["params"],
                      "loop": False}  # fmt: skip
    assert record["params"].startswith(f"minterpolate=fps={8 * factor}:")
    assert recorder.events[0] == ("start", "interpolate", 5 * factor + 1) and recorder.events[-1] == ("end",)
    assert sum(e[1] for e in recorder.events if e[0] == "advance") == 5 * factor + 1
    looped = interpolate_clip(clip, factor, loop=True)
    assert len(looped.frames) == 6 * factor and np.array_equal(looped.frames[::factor], clip.frames)


def test_two_times_eight_fps_writes_eleven_frames_at_sixteen(tmp_path):
    from svd_cli.io.video import write_frames

    out = interpolate_clip(Clip(pan(6), fps=8), 2)
    meta, frames = read_video(write_frames(out.frames, tmp_path / "v.mp4", fps=out.fps, fmt="mp4"))
    assert len(frames) == 11 and meta["fps"] == 16.0


def test_the_same_clip_gives_the_same_frames():
    clip = Clip(pan(5), fps=7)
    assert np.array_equal(interpolate_clip(clip, 3).frames, interpolate_clip(clip, 3).frames)


def test_factor_one_is_the_clip_itself():
    clip = Clip(pan(3), fps=8)
    assert interpolate_clip(clip, 1) is clip


@pytest.mark.parametrize("factor", [0, 5, 2.5, True])
def test_a_factor_outside_one_to_four_is_refused(factor):
    with pytest.raises(OptionError) as info:
        interpolate_clip(Clip(pan(3), fps=8), factor)
    assert info.value.marked() == f"{ref('interpolate')} {factor}: must be a whole number between 1 and 4."
    assert info.value.option == "interpolate" and info.value.allowed == (1, 4)


def test_an_ffmpeg_failure_is_one_sentence_naming_the_stage():
    tiny = np.zeros((3, 8, 8, 3), np.uint8)  # minterpolate needs 16 pixels a side
    with pytest.raises(SvdError) as info:
        interpolate_clip(Clip(tiny, fps=8), 2)
    assert str(info.value) == (
        "The interpolate stage failed in ffmpeg (Height or width < 16); "
        "leave out interpolate to keep the clip as it is."
    )


# --- RIFE: the architecture with hand-set and random weights (the real checkpoint cannot be downloaded here) ----


def rife_weights(path, flow_to_a=(0.0, 0.0), flow_to_b=(0.0, 0.0), seed=0):
    """A RIFE 4.13 file whose network predicts one constant flow and an even blend: every block's last layer is
    zeroed except block0's bias, which carries the flow (x8, the scale block0 works at)."""
    import torch
    from safetensors.torch import save_file

    from svd_cli.models.rife import IFNet

    torch.manual_seed(seed)
    state = IFNet().state_dict()
    for block in range(4):
        state[f"block{block}.lastconv.0.weight"].zero_()
        state[f"block{block}.lastconv.0.bias"].zero_()
    for channel, value in enumerate([*flow_to_a, *flow_to_b]):
        state["block0.lastconv.0.bias"][4 * channel : 4 * channel + 4] = value / 8  # 4 sub-pixels per channel
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_rife_warps_both_frames_along_its_flow_to_the_midpoint(tmp_path):
    half = (VELOCITY[0] / 2, VELOCITY[1] / 2)
    weights = rife_weights(tmp_path / "rife.safetensors", (-half[0], -half[1]), half)
    clip = square_clip(straight_line(4))
    out = interpolate_clip(clip, 2, method="rife", weights=weights)
    assert len(out.frames) == 7 and out.fps == 16 and np.array_equal(out.frames[::2], clip.frames)
    error, area = square_errors(clip.frames, out.frames, 2)
    assert error <= 0.5 and area >= 0.95  # both warped copies land on the same place: one whole square
    assert out.stages[-1]["method"] == "rife" and out.stages[-1]["params"] == "rife-4.13 rife.safetensors"


def test_rife_with_no_flow_is_an_even_blend(tmp_path):
    clip = Clip(pan(2), fps=8)
    out = interpolate_clip(clip, 2, method="rife", weights=rife_weights(tmp_path / "still.safetensors"))
    blend = (clip.frames[0].astype(float) + clip.frames[1]) / 2
    assert np.abs(out.frames[1] - blend).max() <= 0.5 + 1e-9


def test_a_file_that_is_not_rife_4_13_is_refused_naming_it(tmp_path):
    import torch
    from safetensors.torch import save_file

    from svd_cli.errors import UsageError

    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(1)}, str(other))
    with pytest.raises(UsageError) as info:
        interpolate_clip(Clip(pan(2), fps=8), 2, method="rife", weights=other)
    assert str(info.value).startswith(f"interpolator {other}: not a RIFE 4.13 flow network (128 expected weights")
    with pytest.raises(OptionError, match="interpolator='rife': needs a RIFE 4.13 safetensors file of weights."):
        interpolate_clip(Clip(pan(2), fps=8), 2, method="rife")


# --- `svd animate --interpolator`: the built-in tiny-rife through the registry, files, wrong names -------------

PHOTO = EXAMPLES / "coffee.png"
FAST = ["--model", "tiny", "--frames", "6", "--steps", "2", "--fps", "8", "--size", "256x128", "--no-watermark"]
RIFE_REPO, RIFE_FILE = "imaginairy/rife-interpolation", "rife-flownet-4.13.2.safetensors"
RIFE_REVISION = "26442e52cc30b88c5cb490702647b8de9aaee8a7"


def test_tiny_rife_doubles_the_frame_rate_and_a_file_is_recorded_absolute(svd, tiny_dir, tmp_path, monkeypatch):
    import json
    import shutil

    from svd_cli.models.tiny import ensure_tiny_file

    out = tmp_path / "r.mp4"
    r = svd("animate", PHOTO, *FAST, "--interpolate", "2", "--interpolator", "tiny-rife", "--out", out)
    assert r.code == 0, r.err
    meta, frames = read_video(out)
    assert len(frames) == (6 - 1) * 2 + 1 and meta["fps"] == 16 and "Interpolating frames" in r.err
    recipe = json.loads(out.with_name("r.mp4.json").read_text())
    assert recipe["settings"]["interpolator"] == "tiny-rife"
    assert {k: recipe["stages"][-2][k] for k in ("stage", "method")} == {"stage": "interpolate", "method": "rife"}

    (tmp_path / "models").mkdir()
    shutil.copy(ensure_tiny_file("tiny-rife"), tmp_path / "models" / "mine.safetensors")
    monkeypatch.chdir(tmp_path / "models")
    r = svd("animate", PHOTO, *FAST, "--interpolate", "3", "--interpolator", "mine.safetensors", "--out", out,
            "--overwrite")  # fmt: skip
    assert r.code == 0, r.err
    recipe = json.loads(out.with_name("r.mp4.json").read_text())
    assert recipe["settings"]["interpolator"] == str(tmp_path / "models" / "mine.safetensors")
    assert recipe["stages"][-2]["params"] == "rife-4.13 mine.safetensors"
    assert len(read_video(out)[1]) == (6 - 1) * 3 + 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("missing.safetensors", "--interpolator missing.safetensors: no such file; name an existing .safetensors "
         "interpolator or a registry interpolator."),
        ("flowframes", "--interpolator flowframes: not an interpolator name (minterpolate, rife, tiny-rife) nor an "
         "existing .safetensors file."),
        ("tiny-upscaler", "--interpolator tiny-upscaler: an upscaler, but this setting takes an interpolator "
         "(minterpolate, rife, tiny-rife, a .safetensors file)."),
    ],
)  # fmt: skip
def test_an_unknown_interpolator_is_refused_before_any_work(svd, tmp_path, value, message):
    out = tmp_path / "x.mp4"
    r = svd("animate", PHOTO, *FAST, "--interpolate", "2", "--interpolator", value, "--out", out)
    assert r.code == 2 and r.lines == [f"svd: error: {message}"] and not out.exists()


def test_rife_is_pulled_at_its_pinned_revision_and_offline_fails_like_svd(svd, tmp_path):
    """`svd weights pull rife` against a fake Hub that serves only the pinned commit; the tiny network's file
    stands in for the 21.5 MB one (same names, narrow widths) and loads as a RIFE network."""
    import json

    from svd_cli.models.rife import load_ifnet
    from svd_cli.models.tiny import ensure_tiny_file

    from .conftest import run_subprocess
    from .test_hub_download import FakeHub, svd_env

    rows = {row["name"]: row for row in json.loads(svd("weights", "list", "--json").out)}
    assert (rows["rife"]["kind"], rows["rife"]["repo"], rows["tiny-rife"]["repo"]) == ("interpolator", RIFE_REPO,
                                                                                       "built-in")  # fmt: skip
    data = ensure_tiny_file("tiny-rife").read_bytes()
    hub = FakeHub({RIFE_FILE: data, "README.md": b"# fake\n"}, repo=RIFE_REPO, revisions=(RIFE_REVISION,))
    try:
        pulled = run_subprocess("weights", "pull", "rife", env=svd_env(hub.url, tmp_path / "hf"))
    finally:
        hub.stop()
    assert pulled.returncode == 0, pulled.stderr
    assert hub.fetched("GET") == [RIFE_FILE]
    cached = next((tmp_path / "hf" / "hub").glob(f"models--imaginairy--rife-interpolation/snapshots/*/{RIFE_FILE}"))
    assert f"rife is ready: {cached}" in pulled.stderr and cached.read_bytes() == data
    assert load_ifnet(cached).block0.conv0[1][0].out_channels == 16

    offline = run_subprocess(
        "weights", "pull", "rife", env=svd_env(hub.url, tmp_path / "empty") | {"HF_HUB_OFFLINE": "1"}
    )
    assert offline.returncode == 1 and offline.stderr.strip().splitlines() == [
        f"svd: error: rife needs {RIFE_REPO}/{RIFE_FILE}, which is not downloaded, and HF_HUB_OFFLINE=1 forbids "
        "downloading it: unset HF_HUB_OFFLINE and run `svd weights pull rife` while online, or use --interpolator "
        "tiny-rife."
    ]
