"""Memory profiles, the auto choice, the out-of-memory fallback, `svd doctor` and `svd bench` on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from svd_cli.memory import PROFILE_ORDER, JobShape, choose_profile, estimate_peak_bytes, plan_for

from .conftest import EXAMPLES, ROOT, TINY_FAST

GIB = 2**30
SVD_XT = JobShape(
    unet_bytes=3_049_246_164, image_encoder_bytes=1_264_153_600, vae_bytes=195_485_694,
    unet_base_channels=320, vae_base_channels=128, frames=25, width=1024, height=576, dtype_bytes=2,
)  # fmt: skip


@pytest.mark.parametrize("profile", PROFILE_ORDER)
def test_every_profile_runs_through_svd_animate(svd, tiny_dir, tmp_path, profile):
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", "3", "--memory", profile,
            "--out", tmp_path / "v.mp4")  # fmt: skip
    assert r.code == 0, r.err
    recipe = json.loads((tmp_path / "v.mp4.json").read_text())
    assert recipe["runtime"]["memory"]["profile"] == profile
    assert f"Memory profile {profile}" in r.err


def test_the_fallback_estimate_orders_the_profiles_within_their_targets():
    # The analytic estimate is only auto's fallback now (tests/test_simulate.py covers the simulated peaks);
    # it must still rank the profiles and put each under its target (balanced 7.5, low 5, min 3 GiB).
    peaks = [estimate_peak_bytes(plan_for(p), SVD_XT) for p in PROFILE_ORDER]
    assert peaks == sorted(peaks, reverse=True)
    high, balanced, low, minimum = peaks
    assert balanced <= 7.5 * GIB and low <= 5 * GIB and minimum <= 3 * GIB


@pytest.mark.parametrize(
    "free_gib, expected", [(80, "high"), (24, "balanced"), (12, "balanced"), (8, "low"), (4, "low"), (3, "min")]
)
def test_auto_picks_the_fastest_profile_that_fits(free_gib, expected):
    plan, estimates = choose_profile(free_gib * GIB, SVD_XT)
    assert plan.profile == expected
    assert f"{free_gib:.1f} GiB free" in plan.reason
    assert [name for name, _ in estimates] == list(PROFILE_ORDER)


def test_auto_on_cpu_takes_the_fastest_and_says_why():
    plan, _ = choose_profile(None, SVD_XT)
    assert plan.profile == "high" and "CPU" in plan.reason


def _peak_rss_of(*commands: list[str]) -> list[int]:
    """Run svd commands as concurrent child processes; return each one's peak resident memory (ru_maxrss)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core each, side by side
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "svd_cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for args in commands
    ]
    peaks = []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child and returns its own resource usage
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0, proc.stderr.read().decode()
        peaks.append(usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024))
    return peaks


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 (Linux/macOS) to read a child's peak RSS")
def test_low_uses_less_peak_memory_than_high_at_1024x576(tiny_dir, tmp_path):
    common = ["animate", str(EXAMPLES / "astronaut.png"), "--model", "tiny", "--frames", "2", "--steps", "1",
              "--size", "1024x576", "--seed", "1", "--quiet"]  # fmt: skip
    high, low = _peak_rss_of(
        [*common, "--memory", "high", "--out", str(tmp_path / "high.mp4")],
        [*common, "--memory", "low", "--out", str(tmp_path / "low.mp4")],
    )
    print(f"peak RSS at 1024x576: high {high / 2**20:.0f} MiB, low {low / 2**20:.0f} MiB")
    assert low < high - 300 * 2**20


class _InjectOOM:
    """Raise CUDA's out-of-memory error from SDPA when the attention batch is larger than `limit`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.raised = 0
        self.original = torch.nn.functional.scaled_dot_product_attention

    def __call__(self, q, k, v, *args, **kwargs):
        if q.shape[0] > self.limit:
            self.raised += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the test)")
        return self.original(q, k, v, *args, **kwargs)


def test_out_of_memory_steps_down_and_gives_the_same_video(svd, tiny_dir, tmp_path, monkeypatch):
    # The UNet's temporal attention runs one sequence per latent pixel: 2 x pixels with CFG batched, half with
    # CFG split. An OOM above the split size fails `high` and lets `balanced` through, like a too-small card.
    pixels_at_attention_level = (256 // 16) * (128 // 16)  # the tiny UNet attends at 1/16 of the image size
    inject = _InjectOOM(limit=pixels_at_attention_level)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", inject)
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", "9", "--memory", "high",
            "--format", "frames", "--out", tmp_path / "fallback")  # fmt: skip
    assert r.code == 0, r.err
    assert inject.raised >= 1
    assert "Out of memory with --memory high; retrying this video with --memory balanced" in r.err
    recipe = json.loads((tmp_path / "fallback.frames.json").read_text())
    assert recipe["runtime"]["memory"]["profile"] == "balanced"
    assert "fell back from high" in recipe["runtime"]["memory"]["reason"]
    monkeypatch.undo()

    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--seed", "9", "--memory", "balanced",
            "--format", "frames", "--out", tmp_path / "direct")  # fmt: skip
    assert r.code == 0, r.err
    a = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "fallback").glob("*.png"))]
    b = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "direct").glob("*.png"))]
    assert len(a) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not list(tmp_path.glob(".*partial*"))


def test_out_of_memory_on_min_fails_that_video_clearly(svd, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", _InjectOOM(limit=0))
    r = svd("animate", EXAMPLES / "coffee.png", *TINY_FAST, "--memory", "low", "--out", tmp_path / "x.mp4")
    assert r.code == 1
    assert "retrying this video with --memory min" in r.err
    assert "Out of memory on cpu even with --memory min" in r.err
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob(".*partial*"))


def test_doctor_works_without_a_gpu(svd):
    r = svd("doctor", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["torch"] == torch.__version__ and report["gpus"] == []
    assert report["ffmpeg"]["path"] and "version" in report["ffmpeg"]
    xt = report["auto_profiles"]["svd-xt"]
    # On the CPU the choice respects the RAM (tests/test_ram.py), so it depends on this machine.
    assert xt["profile"] in (*PROFILE_ORDER, "none") and set(xt["estimated_peak_bytes"]) == set(PROFILE_ORDER)
    assert "of RAM" in xt["reason"]
    registry = {w["name"] for w in report["weights"] if w["repo"] not in ("single file", "imported")}
    assert registry == {
        "svd", "svd-xt", "svd-xt-1.1", "tiny", "sv3d-u", "sv3d-p", "tiny-sv3d", "tiny-sv3d-p", "animatelcm-svd-xt",
        "svd-xt-file", "sdxl-turbo", "tiny-t2i", "realesrgan-x2", "tiny-upscaler", "rife", "tiny-rife", "taesd",
        "tiny-taesd", "u2net", "tiny-u2net",
    }  # fmt: skip
    text = svd("doctor")
    assert text.code == 0 and "GPU: none found" in text.out and "--memory auto for svd-xt" in text.out


def test_bench_runs_on_cpu_at_reduced_size(svd, tiny_dir, tmp_path):
    out = tmp_path / "bench.json"
    rows = "high,high+cache2+taesd,balanced,low,min,diffusers,diffusers-lowmem"
    r = svd("bench", "--arch", "tiny", "--frames", "2", "--size", "128x64", "--steps", "2", "--profiles", rows,
            "--out", out)  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(out.read_text())
    assert report["device_type"] == "cpu" and report["diffusers"] and report["torch"]
    assert "Random weights" in report["note"]
    rows = {row["row"]: row for row in report["rows"]}
    assert list(rows) == ["high", "high+cache2+taesd", "balanced", "low", "min", "diffusers", "diffusers-lowmem"]
    assert rows["high+cache2+taesd"]["savers"] == ["feature cache 2", "TAESD's decoder"]
    for name in ("high", "high+cache2+taesd", "balanced", "low", "min", "diffusers"):
        row = rows[name]
        assert "error" not in row, row
        assert row["seconds"] > 0 and row["seconds_per_step"] > 0 and row["peak_rss_bytes"] > 0
        assert row["time_vs_diffusers"] > 0
    assert rows["diffusers"]["time_vs_diffusers"] == 1.0
    assert "needs a GPU" in rows["diffusers-lowmem"]["error"]
    assert "svd bench on" in r.out and "diffusers" in r.out


def test_readme_documents_every_profile():
    readme = (ROOT / "README.md").read_text()
    for profile in PROFILE_ORDER:
        assert f"`{profile}`" in readme
