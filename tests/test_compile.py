"""`--compile`: the UNet's repeated blocks compiled by torch.compile, the compiled code kept for later runs."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from .conftest import EXAMPLES, run_subprocess

PHOTO = EXAMPLES / "coffee.png"
ARGS = ("--model", "tiny", "--frames", "2", "--steps", "2", "--size", "128x64", "--seed", "1", "--format", "frames")


def _frames(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)).astype(int) for path in sorted(folder.glob("*.png"))]


def _compile_seconds(err: str) -> float:
    found = re.search(r"Compiling the UNet's blocks: ([\d.]+) s of that", err)
    assert found, err
    return float(found.group(1))


def test_compiled_frames_are_within_a_level_and_a_new_process_reuses_the_compiled_code(svd, tiny_dir, tmp_path):
    eager = svd("animate", PHOTO, *ARGS, "--out", tmp_path / "eager")
    assert eager.code == 0, eager.err
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "compiled")}  # cold, whatever ran on this machine before
    first = run_subprocess("animate", PHOTO, *ARGS, "--compile", "--out", tmp_path / "first", env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "W1" not in first.stderr and "Traceback" not in first.stderr  # no log line of torch's own
    recipe = json.loads((tmp_path / "first.frames.json").read_text())
    assert recipe["runtime"]["compile"] is True

    # Its recipe replayed in a new process: compiled again, from the code the first run kept.
    second = run_subprocess("animate", "--recipe", tmp_path / "first.frames.json", "--out", tmp_path / "second",
                            env=env, timeout=600)  # fmt: skip
    assert second.returncode == 0, second.stderr
    cold, warm = _compile_seconds(first.stderr), _compile_seconds(second.stderr)
    print(f"compile: {cold:.1f} s cold, {warm:.1f} s from the kept code")
    assert warm < cold / 3, (cold, warm)

    uncompiled, compiled, again = (_frames(tmp_path / name) for name in ("eager", "first", "second"))
    assert len(uncompiled) == len(compiled) == len(again) == 2
    for plain, fast, replayed in zip(uncompiled, compiled, again, strict=True):
        assert np.abs(plain - fast).max() <= 1  # within 1/255 of the uncompiled UNet's frames
        assert np.array_equal(fast, replayed)


def test_without_a_cpp_compiler_compile_says_so_in_one_line_and_runs_uncompiled(svd, tiny_dir, tmp_path, monkeypatch):
    plain = svd("animate", PHOTO, *ARGS, "--out", tmp_path / "plain")
    assert plain.code == 0, plain.err
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler to be found
    monkeypatch.delenv("CXX", raising=False)
    r = svd("animate", PHOTO, *ARGS, "--compile", "--out", tmp_path / "asked")
    assert r.code == 0, r.err
    assert (
        "--compile: torch.compile needs a C++ compiler on the CPU (e.g. g++) and none is on the PATH; the UNet runs "
        "uncompiled." in r.err.replace("\n", " ")
    ), r.err
    assert "compile" not in json.loads((tmp_path / "asked.frames.json").read_text())["runtime"]
    pairs = zip(_frames(tmp_path / "plain"), _frames(tmp_path / "asked"), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
