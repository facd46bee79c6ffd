"""Damaged weights are found before loading, named, and repaired by the advice given (no advice that loops)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .conftest import EXAMPLES

UNET = Path("unet") / "diffusion_pytorch_model.safetensors"
VAE = Path("vae") / "diffusion_pytorch_model.safetensors"


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_file_in_a_local_folder_is_named_with_a_fix_that_fits(svd, tiny_dir, tmp_path):
    folder = tmp_path / "my-model"
    shutil.copytree(tiny_dir, folder)
    _truncate(folder / UNET)
    r = svd("animate", EXAMPLES / "coffee.png", "--model", folder, "--frames", "2", "--steps", "1",
            "--size", "128x64", "--out", tmp_path / "v.mp4")  # fmt: skip
    assert r.code == 1
    error = r.lines[-1]
    assert error.startswith(f"svd: error: {folder / UNET} is truncated (")
    assert "this is a local folder, so svd cannot download it: replace the file with a complete copy" in error
    assert "svd weights pull" not in error
    assert not (tmp_path / "v.mp4").exists()

    r = svd("weights", "verify", folder)
    assert r.code == 1 and f"{folder / UNET} is truncated" in r.err
    r = svd("weights", "verify", tiny_dir)
    assert r.code == 0 and "every weights file is whole" in r.err


def test_a_damaged_tiny_model_is_reported_and_rebuilt(svd, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SVD_HOME", str(tmp_path / "svd"))
    from svd_cli.models.tiny import tiny_model_dir

    shutil.copytree(tiny_dir, tiny_model_dir())
    _truncate(tiny_model_dir() / VAE, keep=0.9)
    r = svd("weights", "verify")
    assert r.code == 1
    assert f"✗ tiny: {tiny_model_dir() / VAE} is truncated" in r.err
    assert "svd rebuilds the built-in tiny model: run `svd weights pull tiny`" in r.err

    r = svd("weights", "pull", "tiny")
    assert r.code == 0, r.err
    assert f"The built-in tiny model is damaged ({tiny_model_dir() / VAE} is truncated" in r.err
    assert (tiny_model_dir() / VAE).read_bytes() == (tiny_dir / VAE).read_bytes()  # same seed, same weights
    assert svd("weights", "verify", "tiny").code == 0
