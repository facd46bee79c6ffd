"""Golden outputs: a fixed set of `svd animate` runs on the tiny models must write byte-identical files (issue 18).

Each case runs one command on the built-in tiny models, on the CPU, with a fixed seed, and hashes every file it
writes: the video (or PNG frames, or the still) byte for byte, and the sidecar recipe with its volatile fields
(dates, timings, paths, package versions, free RAM) removed. The hashes must equal REFERENCE.

Determinism: torch's CPU results depend on its thread count, and ffmpeg's x264 picks its thread count from the
CPUs it may use (threads=3 on 2 CPUs, 1 on 1), which changes the bytes and even the decoded pixels. So, for the
length of this module, the process is pinned to one CPU (os.sched_setaffinity, inherited by the ffmpeg
subprocesses) and torch to one thread (torch.set_num_threads(1)); that makes the hashes the same on any Linux
machine (and, on 2 shared cores, it is also 3-4 times faster than 2 threads). Without sched_setaffinity
(macOS, Windows) the module is skipped. The hashes also depend on the locked torch and on the ffmpeg binary of the
locked imageio-ffmpeg: upgrading those may change them; a refactor of svd's own code must not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

import pytest

from .conftest import EXAMPLES

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")

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

# Produced by the code at commit 973512bcf478a49fe52b48bea97130dfab4834fe (before the issue 18 refactor).
# Do NOT regenerate these in a change that claims "no change in output": a mismatch means the output changed.
REFERENCE: dict[str, dict[str, str]] = {
    "default": {
        "default.mp4": "989ce6f89150b47b492d17d4c17c17fce6c9c3b6a9efc19c2ba3e01ba5832194",
        "default.mp4.json": "ffe806363cfd2d7b73a20bd54a99bedadcc59f82b1965bccc2341427662b5f8e",
    },
    "min_pad_bucket40": {
        "min_pad.mp4": "c119ee4e13282e8ac394f1a3e967f4d8093c29817c19845deb36b24f488b7d05",
        "min_pad.mp4.json": "09ae07faa5297a21b594fb0b7b0f10f1119a179c2dd2a9a8ea3e8415763cfaf9",
    },
    "extend_bounce_interpolate_upscale": {
        "long.mp4": "4b707ade035fb946cb911c0d594e7809b371346a8b8a55d223fda68d4c3c26cf",
        "long.mp4.json": "ef6767a943de875036e7ab3ed2c7bd6534998055fd318448d0c5d42216dc721e",
    },
    "prompt_tiny_t2i": {
        "bicycle.mp4": "bafa9631c1099ef32fd11a7e3c295d55543381863ce92a7b483c253a70e3a5ca",
        "bicycle.mp4.json": "5518892e7cebfdb4b5fcb2820802e2ee663f48ff4f87250220f8d2aa15967922",
        "bicycle.png": "73503ded82bb01071fbfa793af616504707b84a3fe0b0eb6844e34acc0d35d7f",
    },
    "format_frames": {
        "frames/frame_0001.png": "08000bdeb0dc041878e8612765e11e0bb252d1c67eb3ce653a7a975bc78abddd",
        "frames/frame_0002.png": "6fdda00356bc9760b1a505356154aa32c2995614ef7d4e05ef86dc60c8e5924a",
        "frames/frame_0003.png": "0c87ea3d32071a2a79b142317a87bfe783d89e05d9ba9b900e382b6009c7cdb6",
        "frames.frames.json": "9c580386775074d36e8052a3e97b5956cce6715710a1486628150c9432bff83a",
    },
}

# Recipe fields that differ from run to run or machine to machine without the output changing.
VOLATILE = {
    (): ("svd_version", "created", "seconds"),
    ("input",): ("path",),
    ("output",): ("path", "still"),
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hashes_of(folder: Path) -> dict[str, str]:
    """Every file written under folder: its bytes' sha256, or for a recipe that of its stable fields."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name.endswith(".json"):
            recipe = stable_recipe(json.loads(path.read_text()))
            out[name] = sha256(json.dumps(recipe, sort_keys=True).encode())
        else:
            out[name] = sha256(path.read_bytes())
    return out


@pytest.fixture(scope="module", autouse=True)
def one_cpu_one_thread():
    """One CPU for this process and its ffmpeg children, one torch thread: the same bytes on any machine."""
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
def test_outputs_are_byte_identical_to_the_reference(svd, tiny_dir, tmp_path, case):
    args, name = CASES[case]
    folder = tmp_path / case
    folder.mkdir()
    r = svd("animate", *shlex.split(args), "--out", folder / name)
    assert r.code == 0, r.err
    got = hashes_of(folder)
    assert got == REFERENCE[case], f"{case}: outputs changed; now {json.dumps(got, indent=4)}"
