"""Scripts can `import svd_cli`; `svd --help` stays instant; writes never lose what was there."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from .conftest import EXAMPLES, ffmpeg_failing_with, read_video, run_subprocess


def _best_of(command: list[str], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def test_help_is_under_a_third_of_importing_torch():
    help_time = _best_of([sys.executable, "-m", "svd_cli", "--help"])
    torch_time = _best_of([sys.executable, "-c", "import torch"])
    print(f"svd --help {help_time:.3f} s, import torch {torch_time:.3f} s, ratio {help_time / torch_time:.2f}")
    assert help_time < torch_time / 3


def test_importing_the_library_does_not_import_torch():
    code = (
        "import sys, svd_cli; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules; "
        "print(svd_cli.__version__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == __import__("svd_cli").__version__


def test_library_api_animates_and_writes(tiny_dir, tmp_path):
    import svd_cli

    model = svd_cli.load("tiny", device="cpu", memory="balanced", size=(128, 64), steps=1)
    assert model.memory_plan.profile == "balanced"
    rocket = Image.open(EXAMPLES / "rocket.jpg")
    # No seed: one is drawn at random, as the CLI draws it, and reported with the frames.
    video = model.animate_image(rocket, frames=3)
    assert isinstance(video, svd_cli.Animation) and video.frames.shape == (3, 64, 128, 3)
    assert video.frames.dtype == np.uint8 and (video.fps, video.model, video.warnings) == (7, "tiny", [])
    assert [stage["stage"] for stage in video.stages] == ["first_frame", "animate", "watermark"]
    again = model.animate_image(rocket, frames=3, seed=video.seed)
    assert np.array_equal(video.frames, again.frames) and again.seed == video.seed
    assert model.animate_image(rocket, frames=3).seed != video.seed  # (a 1 in 2**31 chance of a false alarm)
    # After interpolate=2 the frames are meant for twice the rate, and the result says so.
    smooth = model.animate_image(rocket, frames=3, seed=video.seed, interpolate=2, watermark=False)
    assert len(smooth.frames) == 5 and smooth.fps == 14
    path = svd_cli.write_frames(video.frames, str(tmp_path / "rocket.mp4"), fps=9, fmt="mp4")  # a str path
    meta, decoded = read_video(path)
    assert decoded.shape == (3, 64, 128, 3) and meta["fps"] == 9.0
    meta, decoded = read_video(smooth.write(tmp_path / "smooth.mp4"))
    assert decoded.shape == (5, 64, 128, 3) and meta["fps"] == 14.0
    with pytest.raises(svd_cli.UsageError, match="fps=40: must be between 3 and 30"):
        model.animate_image(Image.open(EXAMPLES / "rocket.jpg"), fps=40)


def test_a_failed_overwrite_keeps_the_previous_video(tmp_path, monkeypatch):
    """Writing goes to a temporary name: a failure half-way leaves the old complete file in place."""
    import imageio_ffmpeg

    from svd_cli.errors import SvdError
    from svd_cli.io.video import write_frames

    frames = np.full((4, 64, 128, 3), 120, dtype=np.uint8)
    target = tmp_path / "clip.mp4"
    write_frames(frames, target, fps=8, fmt="mp4")
    before = target.read_bytes()

    failing = ffmpeg_failing_with(tmp_path / "bin", errno.EIO)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(failing))
    with pytest.raises(SvdError, match=r"Could not write .*clip\.mp4: ffmpeg stopped: Error writing trailer: Input/o"):
        write_frames(frames, target, fps=8, fmt="mp4")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "clip.mp4"]


@pytest.mark.skipif(sys.platform != "linux", reason="a limit on a file's size (RLIMIT_FSIZE, SIGXFSZ) as Linux has it")
def test_a_video_ffmpeg_could_not_finish_is_an_error_not_a_truncated_file(tmp_path):
    """The real ffmpeg under a limit on a file's size (ulimit -f) stops mid-file, killed by SIGXFSZ: before svd ran
    ffmpeg itself, that truncated file was renamed into place as a finished video."""
    import resource
    import signal

    from svd_cli.errors import SvdError
    from svd_cli.io.video import write_frames

    frames = np.random.default_rng(0).integers(0, 256, (8, 128, 256, 3), dtype=np.uint8)  # noise: > 20 kB
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))  # inherited by ffmpeg
    try:
        with pytest.raises(SvdError) as failed:
            write_frames(frames, tmp_path / "clip.mp4", fps=8, fmt="mp4")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert str(failed.value).startswith(  # then the fix, in the library's words for the option
        f"Could not write {tmp_path / 'clip.mp4'}: file too large for that file system or for this process's limit "
        "on a file's size (ulimit -f); choose another "
    )
    assert list(tmp_path.iterdir()) == []  # no video, and no temporary file


def test_the_library_draws_from_a_prompt_and_documents_every_keyword(tiny_dir):
    """`animate_prompt` is the CLI's --prompt; help() lists each keyword from the option schema; every name in
    `svd_cli.__all__` (results, progress, each error a script can meet) is there to import."""
    import svd_cli

    model = svd_cli.load("tiny", device="cpu", size=(128, 64), steps=1, frames=2)
    video = model.animate_prompt("a red bicycle", image_model="tiny-t2i", image_steps=1, seed=4)
    drawn = video.stages[0]
    assert (drawn["stage"], drawn["prompt"], drawn["model"], drawn["seed"]) == ("first_frame", "a red bicycle",
                                                                              "tiny-t2i", 4)  # fmt: skip
    assert video.first_frame.size == (128, 64) and video.frames.shape == (2, 64, 128, 3)
    with pytest.raises(svd_cli.UsageError, match="seeds=: not a keyword here"):
        model.animate_image(Image.open(EXAMPLES / "rocket.jpg"), seeds=[1, 2])
    doc = svd_cli.LoadedModel.animate_image.__doc__
    for keyword in ("motion_bucket (int, default the model's)", "extend (int, default 0)", "style (str", "fit ("):
        assert f"\n    {keyword}" in doc, keyword
    assert "\n    device (" in svd_cli.load.__doc__
    assert all(getattr(svd_cli, name) for name in svd_cli.__all__)
    assert {"ModelLoadError", "NonFiniteError", "LoadedModel", "Progress", "Animation"} <= set(svd_cli.__all__)


def test_on_step_sees_every_step_and_what_it_raises_stops_the_run(tiny_dir):
    import torch

    import svd_cli

    model = svd_cli.load("tiny", device="cpu", memory="balanced", size="256x128", frames=4, steps=3)
    photo = Image.open(EXAMPLES / "coffee.png")
    seen = []
    video = model.animate_image(photo, seed=1, on_step=lambda *call: seen.append(call))
    assert [(step, steps, tuple(latents.shape)) for step, steps, latents in seen] == [
        (n, 3, (1, 4, 4, 16, 32)) for n in (1, 2, 3)
    ]
    assert not torch.equal(seen[0][2], seen[2][2]), "each step's own latents"
    for error in (ValueError("enough"), KeyboardInterrupt()):
        steps_run = []

        def stop_at_two(step, steps, latents, error=error, steps_run=steps_run):
            steps_run.append(step)
            if step == 2:
                raise error

        with pytest.raises(type(error)) as raised:
            model.animate_image(photo, seed=1, on_step=stop_at_two)
        assert raised.value is error and steps_run == [1, 2]
    # A stopped run leaves nothing behind: the next one makes the same frames as before.
    assert np.array_equal(model.animate_image(photo, seed=1).frames, video.frames)
    with pytest.raises(svd_cli.UsageError, match="on_step=3: give a function"):
        model.animate_image(photo, on_step=3)


def test_the_library_opens_a_path_as_the_cli_does_and_names_image_for_anything_else(tiny_dir):
    from pathlib import Path

    import svd_cli

    model = svd_cli.load("tiny", device="cpu", size=(128, 64), steps=1, frames=2, watermark=False)
    photo = EXAMPLES / "coffee.png"
    frames = model.animate_image(Image.open(photo), seed=3).frames
    assert np.array_equal(model.animate_image(str(photo), seed=3).frames, frames)
    assert np.array_equal(model.animate_image(Path(photo), seed=3).frames, frames)
    with pytest.raises(svd_cli.InputImageError, match="missing.png: file not found"):
        model.animate_image("missing.png")
    for wrong in (None, 3, np.zeros((64, 128, 3), dtype=np.uint8)):
        with pytest.raises(svd_cli.UsageError, match="image=.*: give a PIL image or the path of a picture file") as e:
            model.animate_image(wrong)
        assert e.value.option == "image"


def test_a_broken_install_is_named_not_blamed_on_the_model(tiny_dir, tmp_path):
    """A torchvision that does not match torch (its compiled operators missing) fails the run in one line naming
    the package, its own error and the fix; `svd doctor` says the same and exits 1."""
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "a.mp4"
    r = run_subprocess("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--out", out, env=env)
    assert r.returncode == 1 and not out.exists(), r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("svd: error: The installed torchvision ") and "does not import (RuntimeError: operator " \
        "torchvision::nms does not exist): the Python environment is broken, not the model; reinstall torch and " \
        "torchvision together" in line, line  # fmt: skip
    doctor = run_subprocess("doctor", env=env)
    assert doctor.returncode == 1 and "Broken install: the installed torchvision" in doctor.stdout, doctor.stderr
