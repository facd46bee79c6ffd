"""Batches: many inputs in one process, hostile files, resume, Ctrl-C and SIGKILL, scripting conveniences."""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import EXAMPLES, ffmpeg_failing_with, read_video, run_subprocess

FAST = ["--model", "tiny", "--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "1"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height but holds no pixels: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def make_hostile_folder(root: Path) -> dict[str, str]:
    """20+ inputs: good photos, awkward-but-valid images and broken files. Returns name -> expected status."""
    root.mkdir(parents=True)
    expect: dict[str, str] = {}
    coffee = Image.open(EXAMPLES / "coffee.png").convert("RGB")

    def good(name: str, image: Image.Image, **save) -> None:
        image.save(root / name, **save)
        expect[name] = "ok"

    for name in ("astronaut.png", "chelsea.png", "rocket.jpg"):
        shutil.copy(EXAMPLES / name, root / name)
        expect[name] = "ok"
    good("webp.webp", coffee)
    good("bmp.bmp", coffee)
    good("tiff.tiff", coffee)
    good("sixteen-bit.png", Image.fromarray((np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)))
    good("cmyk.jpg", coffee.convert("CMYK"))
    good("palette.png", coffee.convert("P", palette=Image.Palette.ADAPTIVE))
    rgba = coffee.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(coffee.size))
    good("transparent.png", rgba)
    good("grey.png", coffee.convert("L"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    good("exif-rotated.jpg", coffee, exif=exif)
    frames = [coffee.resize((64, 48)), coffee.resize((64, 48)).rotate(90)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    expect["animated.gif"] = "ok"
    good("one-pixel.png", Image.new("RGB", (1, 1), (200, 30, 30)))
    good("space and ünïcödé.png", coffee)
    (root / "sub").mkdir()
    good("sub/inner.png", coffee)

    (root / "zero-bytes.png").write_bytes(b"")
    expect["zero-bytes.png"] = "failed"
    data = (EXAMPLES / "rocket.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    expect["truncated.jpg"] = "failed"
    (root / "text.png").write_text("this is not a picture\n")
    expect["text.png"] = "failed"
    _png_header_only(root / "bomb.png", 20000, 20000)
    expect["bomb.png"] = "failed"
    shutil.copy(EXAMPLES / "coffee.png", root / "unreadable.png")
    expect["unreadable.png"] = "failed"
    (root / "notes.txt").write_text("not an image: skipped and counted, not an error\n")
    return expect


def _deny_reading(monkeypatch, path: Path) -> None:
    """Make `path` unreadable: chmod where that binds; as root (which bypasses modes) at the open() call."""
    os.chmod(path, 0)
    if not IS_ROOT:
        return
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)


REASONS = {
    "zero-bytes.png": "the file is empty (0 bytes)",
    "truncated.jpg": "truncated or corrupt",
    "text.png": "not an image Pillow can read",
    "bomb.png": "more than the 120 megapixels svd accepts",
    "unreadable.png": "permission denied",
}


def test_hostile_batch_in_one_process_then_resume(svd, tiny_dir, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    expect = make_hostile_folder(inputs)
    assert len(expect) >= 20
    _deny_reading(monkeypatch, inputs / "unreadable.png")
    out = tmp_path / "out"

    r = svd("animate", inputs, *FAST, "--recursive", "--out", out, "--json")
    assert r.code == 1, r.err
    lines = [json.loads(line) for line in r.out.splitlines()]
    results, summary = lines[:-1], lines[-1]
    by_name = {Path(x["input"]).relative_to(inputs).as_posix(): x for x in results}
    assert {k: v["status"] for k, v in by_name.items()} == expect
    for name, reason in REASONS.items():
        error = by_name[name]["error"]
        assert str(inputs / name) in error and reason in error, error
        assert f"{inputs / name}" in r.err  # reported on the terminal too
    assert summary["done"] == sum(v == "ok" for v in expect.values())
    assert summary["failed"] == len(REASONS) and summary["non_images_skipped"] == 1
    assert r.err.count("Loading model") == 1, "the model is loaded once for the whole batch"
    assert "animated.gif: animated image, using its first frame" in r.err

    for name, status in expect.items():
        video = (out / name).with_suffix(".mp4")
        if status == "ok":
            meta, frames = read_video(video)
            assert frames.shape == (2, 64, 128, 3), name
        else:
            assert not video.exists()
    assert (out / "sub" / "inner.mp4").is_file()  # --out mirrors input folders
    assert not [p for p in out.rglob("*") if ".svd-partial-" in p.name]

    # Rerun: every finished video is skipped, nothing is redone; the broken inputs are reported again.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    r = svd("animate", inputs, *FAST, "--recursive", "--out", out, "--json")
    assert r.code == 1
    statuses = [json.loads(line)["status"] for line in r.out.splitlines()[:-1]]
    assert statuses.count("skipped") == summary["done"] and statuses.count("failed") == len(REASONS)
    assert statuses.count("ok") == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == before
    assert "Loading model" not in r.err


def test_awkward_images_decode_upright_and_rgb(tmp_path):
    from svd_cli.io.images import open_image, upright_size

    inputs = tmp_path / "in"
    make_hostile_folder(inputs)
    rotated, _ = open_image(inputs / "exif-rotated.jpg")
    assert rotated.size == (400, 600)  # stored 600x400 landscape, displayed upright as portrait
    assert upright_size(inputs / "exif-rotated.jpg") == (400, 600)  # the header alone says the same
    assert upright_size(inputs / "truncated.jpg") == (640, 427) and upright_size(inputs / "text.png") is None
    transparent, _ = open_image(inputs / "transparent.png", background=(0, 255, 0))
    assert transparent.mode == "RGB" and transparent.getpixel((0, 0)) == (0, 255, 0)  # alpha 0 -> background
    sixteen, _ = open_image(inputs / "sixteen-bit.png")
    assert sixteen.mode == "RGB" and sixteen.getpixel((63, 47))[0] == 255 and sixteen.getpixel((0, 0))[0] == 0
    for name in ("cmyk.jpg", "palette.png", "grey.png", "one-pixel.png"):
        image, _ = open_image(inputs / name)
        assert image.mode == "RGB", name


def test_folder_glob_stdin_and_stable_order(svd, tiny_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.png", "c.jpg"):
        Image.open(EXAMPLES / "chelsea.png").convert("RGB").save(folder / name)
    r = svd(
        "animate", "-", *FAST, "--out", tmp_path / "o1", "--json", stdin=f"{folder / 'c.jpg'}\n\n{folder / 'a.png'}\n"
    )
    assert r.code == 0, r.err
    assert [Path(json.loads(x)["input"]).name for x in r.out.splitlines()[:-1]] == ["a.png", "c.jpg"]

    r = svd("animate", str(folder / "*.png"), *FAST, "--out", tmp_path / "o2", "--json")
    assert r.code == 0, r.err
    assert [Path(json.loads(x)["input"]).name for x in r.out.splitlines()[:-1]] == ["a.png", "b.png"]


def test_seeds_and_variations_make_several_videos_named_by_seed(svd, tiny_dir, tmp_path):
    r = svd("animate", EXAMPLES / "coffee.png", *FAST[:-2], "--seeds", "5,6", "--out", tmp_path)
    assert r.code == 0, r.err
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["coffee-5.mp4", "coffee-6.mp4"]
    r = svd("animate", EXAMPLES / "coffee.png", *FAST[:-2], "--variations", "2", "--name", "{stem}_v{index}",
            "--out", tmp_path / "v")  # fmt: skip
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "v").glob("*.mp4")) == ["coffee_v0.mp4", "coffee_v1.mp4"]


def test_variations_are_a_set_the_same_command_finishes_and_a_larger_n_grows(svd, tiny_dir, tmp_path):
    def run(*extra, out=tmp_path):
        r = svd("animate", EXAMPLES / "coffee.png", *FAST[:-2], *extra, "--out", out)
        assert r.code == 0, r.err
        return {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}

    first = run("--variations", "2")
    seed = int(min(first).removeprefix("coffee-").removesuffix(".mp4"))
    assert sorted(first) == [f"coffee-{seed}.mp4", f"coffee-{seed + 1}.mp4"]
    assert run("--variations", "2") == first  # again (after a crash, from cron): nothing new, nothing redone
    grown = run("--variations", "3")
    assert sorted(grown) == sorted([*first, f"coffee-{seed + 2}.mp4"]) and all(grown[n] == first[n] for n in first)
    assert sorted(run("--seed", "7", "--variations", "2", out=tmp_path / "new")) == ["coffee-7.mp4", "coffee-8.mp4"]


def test_colliding_outputs_are_refused_before_any_work(svd, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(EXAMPLES / "coffee.png", tmp_path / sub / "same.png")
    r = svd("animate", tmp_path / "a" / "same.png", tmp_path / "b" / "same.png", *FAST, "--out", tmp_path / "out")
    assert r.code == 2
    assert "would both be written to" in r.err and "add {seed} or {index} to --name" in r.err
    assert not (tmp_path / "out").exists()


def test_changed_settings_are_reported_not_silently_kept(svd, tiny_dir, tmp_path):
    args = [EXAMPLES / "coffee.png", *FAST, "--out", tmp_path / "c.mp4"]
    assert svd("animate", *args).code == 0
    r = svd("animate", *args[:-2], "--fps", "12", "--out", tmp_path / "c.mp4", "--json")
    assert r.code == 0
    line = json.loads(r.out.splitlines()[0])
    assert line["status"] == "skipped" and "made with other settings (fps 7 -> 12)" in line["reason"]
    assert "use --overwrite to redo it" in r.err
    r = svd("animate", *args[:-2], "--fps", "12", "--out", tmp_path / "c.mp4", "--overwrite")
    assert r.code == 0
    assert json.loads((tmp_path / "c.mp4.json").read_text())["settings"]["fps"] == 12


def test_existing_file_without_recipe_is_not_overwritten_even_with_overwrite(svd, tiny_dir, tmp_path):
    (tmp_path / "c.mp4").write_bytes(b"someone else's video")
    for extra in ([], ["--overwrite"]):
        r = svd("animate", EXAMPLES / "coffee.png", *FAST, "--out", tmp_path / "c.mp4", *extra)
        assert r.code == 0
        assert f"{tmp_path / 'c.mp4'} exists and svd did not make it (no recipe beside it)" in r.err
        assert "svd never replaces what it did not make: move it away or choose another --out" in r.err
        assert (tmp_path / "c.mp4").read_bytes() == b"someone else's video"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]


def test_unwritable_output_folder_fails_each_input_clearly(svd, tiny_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = svd("animate", EXAMPLES / "coffee.png", EXAMPLES / "chelsea.png", *FAST, "--out", blocker / "videos")
    assert r.code == 1
    failures = [line for line in r.err.splitlines() if line.startswith("✗")]
    assert len(failures) == 2
    assert all("part of that path is a file, not a folder" in line for line in failures)


def _deny_writing(monkeypatch, folder: Path) -> None:
    """Make `folder` read-only: chmod where that binds; as root (or on Windows) at svd's first write there, the
    exclusive create of the output's lock file (os.open), which then fails as the OS fails it."""
    os.chmod(folder, 0o555)
    if not IS_ROOT and sys.platform != "win32":
        return
    real_open = os.open

    def guarded_open(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)


def test_read_only_output_folder_fails_clearly(svd, tiny_dir, tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    _deny_writing(monkeypatch, folder)
    try:
        r = svd("animate", EXAMPLES / "coffee.png", *FAST, "--out", f"{folder}/")
    finally:
        os.chmod(folder, 0o755)
    assert r.code == 1
    failures = [line for line in r.err.splitlines() if line.startswith("✗")]
    assert failures == [
        f"✗ {EXAMPLES / 'coffee.png'}: Could not write {folder / 'coffee.mp4'}: permission denied; choose a folder "
        "you can write to with --out."
    ]
    assert list(folder.iterdir()) == []


def test_full_disk_while_writing_leaves_nothing_behind(svd, tiny_dir, tmp_path, monkeypatch):
    import imageio_ffmpeg

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(ffmpeg_failing_with(tmp_path, errno.ENOSPC)))
    out = tmp_path / "out"
    r = svd("animate", EXAMPLES / "coffee.png", *FAST, "--out", f"{out}/")
    assert r.code == 1
    assert f"Could not write {out / 'coffee.mp4'}: no space left on device; free some space" in r.err
    assert "Error writing trailer" not in r.err  # ffmpeg's own line is read by svd, not printed
    assert "Writing video" not in r.err  # no time is reported for the write that failed
    assert not out.exists()  # no video, no sidecar, no temporary file, and not the folder svd made for them


def test_config_file_env_and_flags_in_that_order(svd, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "svd.toml").write_text('model = "tiny"\nframes = 3\nfps = 10\nmotion-bucket = 50\n')

    def fps_used(*extra) -> int:
        out = tmp_path / f"v{len(list(tmp_path.glob('v*.mp4.json')))}.mp4"
        r = svd("animate", EXAMPLES / "coffee.png", "--steps", "1", "--size", "128x64", "--out", out, *extra)
        assert r.code == 0, r.err
        settings = json.loads(out.with_name(out.name + ".json").read_text())["settings"]
        assert settings["frames"] == 3 and settings["motion_bucket"] == 50
        return settings["fps"]

    assert fps_used() == 10  # config file
    monkeypatch.setenv("SVD_FPS", "12")
    assert fps_used() == 12  # environment beats the config file
    assert fps_used("--fps", "14") == 14  # the flag beats both

    r = svd("config", "show", "--json")
    rows = {row["option"]: row for row in json.loads(r.out)}
    assert rows["--fps"]["value"] == "12" and rows["--fps"]["source"] == "env SVD_FPS"
    assert rows["--frames"]["value"] == 3 and rows["--frames"]["source"].startswith("config ")
    assert rows["--model"]["value"] == "tiny"
    assert rows["--steps"]["source"] == "model default"
    assert rows["--memory"]["value"] == "auto" and rows["--memory"]["source"] == "default"


def test_bad_config_file_is_a_usage_error(svd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "svd.toml").write_text("colour = 'red'\n")
    r = svd("animate", EXAMPLES / "coffee.png")
    assert r.code == 2 and "svd.toml: unknown setting 'colour'" in r.err


def test_no_colour_or_bars_when_not_a_terminal(tiny_dir, tmp_path):
    proc = run_subprocess("animate", EXAMPLES / "coffee.png", *FAST, "--out", tmp_path / "x.mp4", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stderr + proc.stdout
    assert json.loads(proc.stdout.splitlines()[0])["status"] == "ok"  # data on stdout...
    assert "Denoising" in proc.stderr  # ...progress on stderr


def test_shell_completion_script(svd):
    r = svd("--show-completion", "bash")
    assert r.code == 0
    assert "_SVD_COMPLETE" in r.out


# --- interruptions, with real processes ------------------------------------------------------------------


def _start_batch(tmp_path: Path, count: int) -> tuple[subprocess.Popen, Path]:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(count):
        Image.open(EXAMPLES / "chelsea.png").convert("RGB").rotate(i * 10).save(inputs / f"img{i:02d}.png")
    out = tmp_path / "out"
    args = ["animate", str(inputs), "--model", "tiny", "--frames", "6", "--steps", "3", "--size", "256x128",
            "--seed", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "svd_cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, out


def _wait_for(predicate, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(svd, tiny_dir, tmp_path):
    proc, out = _start_batch(tmp_path, 4)
    _wait_for(lambda: len(list(out.glob("*.mp4"))) >= 1 if out.exists() else False)
    time.sleep(0.3)  # now in the middle of the next video
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stderr and "done" in stderr  # the summary is printed
    assert "Traceback" not in stderr
    videos = sorted(out.glob("*.mp4"))
    assert 1 <= len(videos) < 4
    assert not [p for p in out.iterdir() if ".svd-partial-" in p.name]
    for v in videos:
        assert read_video(v)[1].shape[0] == 6

    again = svd("animate", tmp_path / "in", "--model", "tiny", "--frames", "6", "--steps", "3", "--size", "256x128",
                "--seed", "1", "--out", out, "--json")  # fmt: skip
    assert again.code == 0, again.err
    statuses = [json.loads(line)["status"] for line in again.out.splitlines()[:-1]]
    assert statuses.count("skipped") == len(videos) and statuses.count("ok") == 4 - len(videos)


def test_sigkill_never_leaves_a_broken_file_under_a_final_name(svd, tiny_dir, tmp_path):
    proc, out = _start_batch(tmp_path, 4)
    # Kill while a video is being written, if we can catch one; the final names must all be whole videos.
    caught = []

    def writing() -> bool:
        if out.exists() and any(".svd-partial-" in p.name for p in out.iterdir()):
            caught.append(True)
            return True
        return proc.poll() is not None or len(list(out.glob("*.mp4"))) >= 2

    _wait_for(writing)
    proc.kill()
    proc.wait(timeout=30)
    for p in out.iterdir():
        if ".svd-partial-" in p.name:
            continue  # hidden temporary names, cleaned up by the next run
        if p.suffix == ".mp4":
            assert read_video(p)[1].shape[0] == 6, p
            assert p.with_name(p.name + ".json").is_file(), "a video never exists without its recipe"
        elif p.suffix == ".json":
            assert json.loads(p.read_text())["settings"]["frames"] == 6

    again = svd("animate", tmp_path / "in", "--model", "tiny", "--frames", "6", "--steps", "3", "--size", "256x128",
                "--seed", "1", "--out", out)  # fmt: skip
    assert again.code == 0, again.err
    assert len(list(out.glob("*.mp4"))) == 4
    assert not [p for p in out.iterdir() if ".svd-partial-" in p.name]
