"""Golden outputs: a fixed set of `svd animate` runs on the tiny models must write the same files (issue 18).

Each case runs one command on the built-in tiny models, on the CPU, with a fixed seed, and compares every file it
writes with the one the code at commit 973512b (before the issue 18 refactor) wrote for the same command, kept
under tests/reference/golden/<case>/:

- the sidecar recipe, without its volatile fields (dates, timings, paths, package versions, free RAM), must be
  the same, but for the colour drift it measures from the frames (within MEASURED_TOLERANCE);
- a PNG (frames, the text-to-image still) must decode to the same pixels, give or take one level in a few of them;
- a video must decode to as many frames of the same size, within MP4_MEAN_LEVELS on average.

Why not the media's bytes: torch's CPU kernels sum in an order that depends on the instruction set they pick
(AVX-512, AVX2, oneDNN's and MKL's own dispatch), so the same code writes different bytes on different CPUs.
Measured on one AMD EPYC (AVX-512) with each of six kernel paths forced (ATEN_CPU_CAPABILITY=default/avx2,
ONEDNN_MAX_CPU_ISA=SSE41/AVX2/AVX2_VNNI, MKL_CBWR=COMPATIBLE, MKL_ENABLE_INSTRUCTIONS=AVX2): every path wrote
other bytes; the PNG frames differed by at most 1 level in at most 0.1 % of values (mean 0.0003-0.0010), while
x264 turns those 1-level nudges into other coding decisions, so the decoded MP4 frames differed by 1.29-1.65
levels on average (PSNR 40.3-41.4 dB). A real change of output is far above the PNG noise: --motion-bucket 126
instead of 127 moves the PNG frames by 0.53 levels on average (max 6) and --noise-aug 0.021 instead of 0.02 by
0.077; in an MP4 those changes measure 2.27-2.62 levels, too close to the noise for a tight bound, so the MP4
cases catch gross changes (a lost stage, frames out of order, another seed) and the PNG cases the fine ones.

The process is pinned to one CPU (os.sched_setaffinity, inherited by the ffmpeg subprocesses, so x264 runs one
thread) and torch to one thread: fewer sources of variation, and on 2 shared cores it is 3-4 times faster than
2 threads. Without sched_setaffinity (macOS, Windows) the module is skipped.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import EXAMPLES, read_video

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")

GOLDEN = Path(__file__).parent / "reference" / "golden"
PHOTO = shlex.quote(str(EXAMPLES / "coffee.png"))
TINY = "--model tiny --device cpu"
SMALL = f"{TINY} --frames 3 --steps 1 --size 128x64"

# name -> (the command line after `svd animate`, the output's name in the case's folder)
CASES = {
    # The default chain (crop, auto memory, watermark, mp4); 256x256 is the smallest size the watermark fits.
    "default": (f"{PHOTO} {TINY} --frames 3 --steps 1 --size 256x256 --seed 1", "default.mp4"),
    "min_pad_bucket40": (
        f"{PHOTO} {TINY} --frames 2 --steps 1 --seed 2 --memory min --fit pad --motion-bucket 40 --size 320x192",
        "min_pad.mp4",
    ),
    # 128x128 upscaled to 256x256, so the watermark also runs after the loop, upscaling and interpolation.
    "extend_bounce_interpolate_upscale": (
        f"{PHOTO} {SMALL} --size 128x128 --seed 3 --extend 1 --loop bounce --interpolate 2"
        " --upscale 2 --upscaler tiny-upscaler",
        "long.mp4",
    ),
    "prompt_tiny_t2i": (
        f"--prompt 'a red bicycle' {SMALL} --image-model tiny-t2i --image-steps 2 --seed 4",
        "bicycle.mp4",
    ),
    "format_frames": (f"{PHOTO} {SMALL} --seed 5 --format frames", "frames"),
}

# Do NOT regenerate the files under GOLDEN in a change that claims "no change in output": a difference beyond the
# bounds below means the output changed. (Four of the five stored recipes hash to the sha256 the same commit's
# recipes had on the machine that first recorded them; the fifth differs only in drift_before, measured from pixels.)

# A recipe field measured from the frames (a long video's colour drift before correction): machine noise too.
MEASURED = "drift_before"
MEASURED_TOLERANCE = 0.05
# Above the kernel-path noise measured above (PNG: max 1 level, mean <= 0.001; MP4: mean <= 1.65 levels) with room
# for a CPU not measured, below a real change (PNG: mean 0.077 for a 0.001 step of --noise-aug).
PNG_MAX_LEVELS = 2
PNG_MEAN_LEVELS = 0.02
MP4_MEAN_LEVELS = 3.0

# Recipe fields that differ from run to run or machine to machine without the output changing.
VOLATILE = {
    (): ("svd_version", "created", "seconds"),
    ("input",): ("path",),
    ("output",): ("path", "still", "bytes", "sha256"),  # the encoded bytes: the frames' machine noise changes them
    ("model",): ("path",),
    ("image", "model"): ("path",),
    ("runtime",): ("torch", "diffusers"),
    ("runtime", "memory"): ("reason",),  # free RAM right now
}


def stable_recipe(recipe: dict) -> dict:
    for where, keys in VOLATILE.items():
        node = recipe
        for step in where:
            node = node.get(step) if isinstance(node, dict) else None
        if isinstance(node, dict):
            for key in keys:
                node.pop(key, None)
    for stage in recipe.get("stages", []):
        stage.pop("path", None)  # the input path as given on the command line
    return recipe


def written(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def pixels(path: Path) -> np.ndarray:
    """The frames a user would see: a PNG's pixels or a video's decoded frames, as int16 (room for differences)."""
    if path.suffix == ".png":
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)[None]
    return read_video(path)[1].astype(np.int16)


def measured_drift(recipe: dict) -> list[float]:
    """Take the drift figures out of a recipe's stages (mean and std of each), in order."""
    drifts = [stage.pop(MEASURED) for stage in recipe.get("stages", []) if MEASURED in stage]
    return [drift[key] for drift in drifts for key in ("mean", "std")]


def difference(name: str, got: Path, reference: Path) -> str | None:
    """Why got is not the same output as reference, or None."""
    if name.endswith(".json"):
        ours, theirs = (stable_recipe(json.loads(path.read_text())) for path in (got, reference))
        measured = [measured_drift(recipe) for recipe in (ours, theirs)]
        if ours != theirs:
            return "the recipe changed"
        if len(measured[0]) != len(measured[1]) or not np.allclose(*measured, rtol=0, atol=MEASURED_TOLERANCE):
            return f"{MEASURED} changed: {measured[0]}, the reference's {measured[1]}"
        return None
    ours, theirs = pixels(got), pixels(reference)
    if ours.shape != theirs.shape:
        return f"frames of shape {ours.shape}, the reference's {theirs.shape}"
    levels = np.abs(ours - theirs)
    if name.endswith(".png") and (levels.max() > PNG_MAX_LEVELS or levels.mean() > PNG_MEAN_LEVELS):
        return f"pixels differ by up to {levels.max()} levels, {levels.mean():.4f} on average"
    if not name.endswith(".png") and levels.mean() > MP4_MEAN_LEVELS:
        return f"decoded frames differ by {levels.mean():.2f} levels on average"
    return None


@pytest.fixture(scope="module", autouse=True)
def one_cpu_one_thread():
    """One CPU for this process and its ffmpeg children, one torch thread: fewer sources of variation, and faster."""
    import torch

    threads, cpus = torch.get_num_threads(), os.sched_getaffinity(0)
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_are_the_same_as_the_reference(svd, tiny_dir, tmp_path, case):
    args, name = CASES[case]
    folder = tmp_path / case
    folder.mkdir()
    r = svd("animate", *shlex.split(args), "--out", folder / name)
    assert r.code == 0, r.err
    reference = GOLDEN / case
    assert written(folder) == written(reference)
    changes = {n: why for n in written(folder) if (why := difference(n, folder / n, reference / n))}
    assert not changes, f"{case}: outputs changed: {changes}"
