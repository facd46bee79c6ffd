"""Scripts can `import svd_cli`; `svd --help` stays instant; writes never lose what was there."""

from __future__ import annotations

import errno
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from .conftest import EXAMPLES, ffmpeg_writer_failing_with, read_video


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

    animator = svd_cli.load("tiny", device="cpu", memory="balanced")
    assert animator.plan.profile == "balanced"
    frames = animator.animate_image(Image.open(EXAMPLES / "rocket.jpg"), frames=3, steps=1, seed=2, size=(128, 64))
    assert frames.shape == (3, 64, 128, 3) and frames.dtype == np.uint8
    again = animator.animate_image(Image.open(EXAMPLES / "rocket.jpg"), frames=3, steps=1, seed=2, size=(128, 64))
    assert np.array_equal(frames, again)
    path = svd_cli.write_frames(frames, tmp_path / "rocket.mp4", fps=9, fmt="mp4")
    meta, decoded = read_video(path)
    assert decoded.shape == (3, 64, 128, 3) and meta["fps"] == 9.0
    with pytest.raises(svd_cli.UsageError, match="fps=40: must be between 3 and 30"):
        animator.animate_image(Image.open(EXAMPLES / "rocket.jpg"), fps=40)


def test_a_failed_overwrite_keeps_the_previous_video(tmp_path, monkeypatch):
    """Writing goes to a temporary name: a failure half-way leaves the old complete file in place."""
    import imageio_ffmpeg

    from svd_cli.errors import SvdError
    from svd_cli.io.video import write_frames

    frames = np.full((4, 64, 128, 3), 120, dtype=np.uint8)
    target = tmp_path / "clip.mp4"
    write_frames(frames, target, fps=8, fmt="mp4")
    before = target.read_bytes()

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", ffmpeg_writer_failing_with(errno.EIO, "Input/output error"))
    with pytest.raises(SvdError, match=r"Could not write .*clip\.mp4: Input/output error"):
        write_frames(frames, target, fps=8, fmt="mp4")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
