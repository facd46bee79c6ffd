"""`--memory auto` on the CPU respects the RAM the OS says is available (issue 14.8)."""

from __future__ import annotations

import pytest

from .conftest import EXAMPLES

GiB = 2**30


def test_doctor_on_a_23_gib_cpu_machine_does_not_pick_high_for_svd_xt():
    """The case reported: ~29 GiB estimated for SVD-XT, 23 GiB of RAM, and `high` picked anyway."""
    from svd_cli.doctor import _auto_profiles_in_ram

    picks = _auto_profiles_in_ram(23 * GiB)
    assert picks["svd-xt"]["profile"] not in ("high", "none")
    assert picks["svd-xt"]["estimated_peak_bytes"]["high"] > 23 * GiB
    assert picks["svd-xt"]["reason"].startswith("23.0 GiB of RAM available;")
    refused = _auto_profiles_in_ram(4 * GiB)["svd-xt"]
    assert refused["profile"] == "none" and "but only 4.0 GiB is available" in refused["reason"]


def test_a_video_too_big_for_the_ram_is_refused_in_one_line_before_denoising(svd, tiny_dir, tmp_path, monkeypatch):
    import svd_cli.memory.ram as ram

    monkeypatch.setattr(ram, "available_ram", lambda: GiB // 2)  # an injected lower available-memory reading
    r = svd("animate", EXAMPLES / "coffee.png", EXAMPLES / "chelsea.png", "--model", "tiny", "--frames", "2",
            "--steps", "1", "--size", "128x64", "--out", f"{tmp_path}/")  # fmt: skip
    assert r.code == 1
    assert r.lines[-1].startswith("svd: error: This video needs about ")
    assert r.lines[-1].endswith(
        "of RAM even with --memory min, but only 0.5 GiB is available; use a smaller --size or fewer --frames, "
        "or close other programs."
    )
    assert "Denoising" not in r.err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("available, profile", [(64 * GiB, "high")])
def test_plenty_of_ram_keeps_the_fastest_profile(svd, tiny_dir, tmp_path, monkeypatch, available, profile):
    import json

    import svd_cli.memory.ram as ram

    monkeypatch.setattr(ram, "available_ram", lambda: available)
    out = tmp_path / "v.mp4"
    r = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--frames", "2", "--steps", "1",
            "--size", "128x64", "--out", out)  # fmt: skip
    assert r.code == 0, r.err
    memory = json.loads(out.with_name("v.mp4.json").read_text())["runtime"]["memory"]
    assert memory["profile"] == profile and memory["reason"].startswith("64.0 GiB of RAM available")
