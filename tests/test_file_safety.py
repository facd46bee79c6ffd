"""svd never loses a user's file: outputs never land on inputs or on folders svd did not make, files svd did
not make are never replaced, reruns only resume, every output has its own recipe, two runs share a folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
from PIL import Image

from .conftest import EXAMPLES, read_video

FAST = ["--model", "tiny", "--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "1"]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _results(r) -> list[dict]:
    return [json.loads(line) for line in r.out.splitlines()[:-1]]


# --- 1-2. outputs never land on inputs -------------------------------------------------------------------


def test_frames_output_over_a_folder_of_photos_is_refused_and_nothing_is_touched(svd, tmp_path):
    """Issue 14.1: the frames folder of photos/2024.png is photos/2024/, which holds input photos."""
    photos = tmp_path / "photos"
    (photos / "2024" / "deeper").mkdir(parents=True)
    shutil.copy(EXAMPLES / "chelsea.png", photos / "2024.png")
    shutil.copy(EXAMPLES / "coffee.png", photos / "2024" / "coffee.png")
    shutil.copy(EXAMPLES / "rocket.jpg", photos / "2024" / "rocket.jpg")
    (photos / "2024" / "deeper" / "notes.txt").write_text("mine")
    before = _tree(photos)

    r = svd("animate", photos, "--recursive", "--format", "frames", "--overwrite", *FAST)
    assert r.code == 2 and len(r.lines) == 1, r.err
    assert f"{photos / '2024.png'}: its frames would go to {photos / '2024'}, a folder holding" in r.lines[0]
    assert "an input of this run" in r.lines[0] and "--out" in r.lines[0]
    # Without --recursive the folder's photos are not inputs, but it is still a folder svd did not make.
    r = svd("animate", photos, "--format", "frames", "--overwrite", *FAST)
    assert r.code == 2 and len(r.lines) == 1, r.err
    assert f"its output {photos / '2024'} is a folder svd did not make" in r.lines[0]
    assert _tree(photos) == before


def test_an_output_on_its_own_input_is_refused(svd, tmp_path):
    """Issue 14.2: animating a.gif to GIF next to itself would replace the input with its video."""
    gif = tmp_path / "a.gif"
    Image.open(EXAMPLES / "coffee.png").convert("RGB").resize((64, 48)).save(gif)
    data = gif.read_bytes()
    r = svd("animate", gif, "--format", "gif", "--overwrite", *FAST)
    assert r.code == 2 and len(r.lines) == 1, r.err
    assert r.lines[0] == (
        f"svd: error: {gif}: its output {gif} is an input of this run and svd never writes over an input; "
        "choose another --out, --name or --format."
    )
    assert gif.read_bytes() == data and sorted(tmp_path.iterdir()) == [gif]


# --- 3. reruns only resume ---------------------------------------------------------------------------------


def test_rerunning_a_folder_skips_svds_own_outputs(svd, tiny_dir, tmp_path):
    """Issue 14.3: a second run over a folder must not take last run's GIF or PNG frames for photos."""
    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy(EXAMPLES / "chelsea.png", folder / "chelsea.png")
    for args in (["--format", "gif"], ["--recursive", "--format", "frames"]):
        first = svd("animate", folder, *args, *FAST, "--json")
        assert first.code == 0, first.err
        assert [x["status"] for x in _results(first)] == ["ok"]
        again = svd("animate", folder, *args, *FAST, "--json")
        assert again.code == 0, again.err
        assert [(x["input"], x["status"]) for x in _results(again)] == [(str(folder / "chelsea.png"), "skipped")]
    with Image.open(folder / "chelsea.gif") as gif:
        assert (gif.n_frames, gif.size) == (2, (128, 64))
    assert len(list((folder / "chelsea").glob("frame_*.png"))) == 2
    # A glob is a scan too.
    r = svd("animate", str(folder / "*"), "--format", "gif", *FAST, "--json")
    assert r.code == 0 and [x["status"] for x in _results(r)] == ["skipped"], r.err


# --- 4. one recipe per output --------------------------------------------------------------------------


def test_every_format_of_one_photo_keeps_its_own_recipe(svd, tiny_dir, tmp_path):
    """Issue 14.4: mp4, then webm, then mp4 again: the third run finds its own recipe and skips."""
    photo = tmp_path / "coffee.png"
    shutil.copy(EXAMPLES / "coffee.png", photo)
    for fmt in ("mp4", "webm"):
        assert svd("animate", photo, "--format", fmt, *FAST).code == 0
    r = svd("animate", photo, *FAST, "--json")
    assert r.code == 0, r.err
    assert _results(r)[0]["status"] == "skipped" and _results(r)[0]["reason"] == "already done with the same settings"
    for fmt in ("mp4", "webm"):
        recipe = json.loads((tmp_path / f"coffee.{fmt}.json").read_text())
        assert recipe["output"]["format"] == fmt and recipe["output"]["path"] == str(tmp_path / f"coffee.{fmt}")


def test_a_frames_folder_with_the_users_files_in_it_is_never_replaced(svd, tiny_dir, tmp_path):
    r = svd("animate", EXAMPLES / "coffee.png", "--format", "frames", *FAST, "--out", f"{tmp_path}/")
    assert r.code == 0, r.err
    (tmp_path / "coffee" / "my-notes.txt").write_text("keep me")
    r = svd("animate", EXAMPLES / "coffee.png", "--format", "frames", *FAST, "--out", f"{tmp_path}/", "--overwrite")
    assert r.code == 0
    assert "holds files svd did not write (my-notes.txt)" in r.err
    assert (tmp_path / "coffee" / "my-notes.txt").read_text() == "keep me"


def test_overwrite_replaces_only_a_video_that_still_matches_its_recipe(svd, tiny_dir, tmp_path):
    """Issue 33.6: the sidecar records the output's size and SHA-256; a video changed since is never replaced."""
    photo = tmp_path / "coffee.png"
    shutil.copy(EXAMPLES / "coffee.png", photo)
    video = tmp_path / "coffee.mp4"
    assert svd("animate", photo, *FAST).code == 0
    recorded = json.loads((tmp_path / "coffee.mp4.json").read_text())["output"]
    assert (recorded["bytes"], recorded["sha256"]) == (
        video.stat().st_size,
        hashlib.sha256(video.read_bytes()).hexdigest(),
    )
    r = svd("animate", photo, *FAST, "--overwrite", "--json")
    assert r.code == 0 and _results(r)[0]["status"] == "ok", r.err  # unchanged: svd's own, redone

    edited = bytearray(video.read_bytes())
    edited[len(edited) // 2] ^= 0xFF  # the same size, other bytes: only the hash tells
    video.write_bytes(bytes(edited))
    for extra in ([], ["--overwrite"]):
        r = svd("animate", photo, *FAST, *extra)
        assert r.code == 0, r.err
        assert f"{video} changed since svd wrote it (coffee.mp4.json records another size or SHA-256)" in r.err
        assert video.read_bytes() == bytes(edited)


def test_a_frames_folders_digest_covers_every_frames_name_and_bytes(tmp_path):
    from svd_cli.io.safety import output_digest

    folder = tmp_path / "clip"
    folder.mkdir()
    for name, data in (("frame_00000.png", b"a"), ("frame_00001.png", b"bc")):
        (folder / name).write_bytes(data)
    size, digest = output_digest(folder)
    assert size == 3
    (folder / "frame_00001.png").write_bytes(b"bd")
    assert output_digest(folder)[1] != digest
    (folder / "frame_00001.png").write_bytes(b"bc")
    (folder / "frame_00001.png").rename(folder / "frame_00002.png")
    assert output_digest(folder) == (3, output_digest(folder)[1]) and output_digest(folder)[1] != digest


# --- 5. two runs at once ---------------------------------------------------------------------------------


def _lock(output: Path, pid: int) -> None:
    """What a running svd process writes when it claims `output`."""
    started = psutil.Process(pid).create_time()
    output.with_name(f".{output.name}.svd-lock").write_text(f"{pid} {started}")


def test_an_output_held_by_a_live_process_is_skipped_and_its_temp_file_kept(svd, tiny_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock(out / "coffee.mp4", owner.pid)
        partial = out / f".coffee.mp4.svd-partial-{owner.pid}-0123abcd.mp4"
        partial.write_bytes(b"half a video")
        r = svd("animate", EXAMPLES / "coffee.png", EXAMPLES / "chelsea.png", *FAST, "--out", f"{out}/", "--json")
        assert r.code == 0, r.err
        status = {Path(x["input"]).name: x for x in _results(r)}
        assert status["chelsea.png"]["status"] == "ok"
        assert status["coffee.png"]["status"] == "skipped"
        assert f"another svd process (pid {owner.pid}) is making {out / 'coffee.mp4'} right now" in r.err
        assert partial.read_bytes() == b"half a video" and not (out / "coffee.mp4").exists()
    finally:
        owner.kill()
        owner.wait()
    # The owner died (as with kill -9): its lock is stale and its temporary file is cleaned up.
    r = svd("animate", EXAMPLES / "coffee.png", *FAST, "--out", f"{out}/")
    assert r.code == 0, r.err
    assert read_video(out / "coffee.mp4")[1].shape == (2, 64, 128, 3)
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.mp4", "chelsea.mp4.json", "coffee.mp4", "coffee.mp4.json"]


def test_two_processes_on_the_same_batch_share_the_work(tiny_dir, tmp_path):
    """Issue 14.5 with two real processes: each video is made once, nothing fails, nothing is left behind."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        Image.open(EXAMPLES / "chelsea.png").convert("RGB").rotate(i * 20).save(inputs / f"img{i}.png")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "svd_cli", "animate", str(inputs), *FAST, "--out", f"{out}/", "--json"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert "Could not write" not in stderr and "Traceback" not in stderr
    done = [json.loads(line) for stdout, _ in outputs for line in stdout.splitlines()[:-1]]
    made = sorted(Path(x["path"]).name for x in done if x["status"] == "ok")
    assert made == [f"img{i}.mp4" for i in range(3)], done  # each exactly once, by one of the two
    for i in range(3):
        assert read_video(out / f"img{i}.mp4")[1].shape == (2, 64, 128, 3)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no lock, no temporary file


def test_a_lock_file_is_created_exclusively_and_names_its_process(tmp_path):
    from svd_cli.io.safety import Busy, claim

    out = tmp_path / "v.mp4"
    with claim(out):
        lock = tmp_path / ".v.mp4.svd-lock"
        assert int(lock.read_text().split()[0]) == os.getpid()
        try:
            with claim(out):
                raise AssertionError("claimed twice")
        except Busy as busy:
            assert busy.pid == os.getpid()
    assert not lock.exists()


def test_only_a_dead_processs_lock_is_removed_after_the_fact(tmp_path):
    """What a Ray run does at its end for the outputs of killed workers: their locks go, a live one's stays."""
    from svd_cli.io.safety import remove_dead_claim

    dead, live = tmp_path / "dead.mp4", tmp_path / "live.mp4"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock(dead, owner.pid)
        _lock(live, os.getpid())
    finally:
        owner.kill()
        owner.wait()
    assert remove_dead_claim(dead) and not (tmp_path / ".dead.mp4.svd-lock").exists()
    assert not remove_dead_claim(live) and (tmp_path / ".live.mp4.svd-lock").exists()
    assert not remove_dead_claim(tmp_path / "none.mp4")


def test_a_killed_process_not_yet_reaped_holds_nothing(tmp_path):
    """A Ray worker killed mid-video stays a zombie until Ray reaps it; its video is made again on another worker
    meanwhile, which takes over the lock and removes the temporary file instead of skipping the video."""
    from svd_cli.io.safety import claim

    out = tmp_path / "v.mp4"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock(out, owner.pid)
        partial = tmp_path / f".v.mp4.svd-partial-{owner.pid}-0a1b2c3d.mp4"
        partial.write_bytes(b"half a video")
        owner.kill()  # and not waited for: a zombie
        while psutil.Process(owner.pid).status() != psutil.STATUS_ZOMBIE:
            pass
        with claim(out):
            assert int((tmp_path / ".v.mp4.svd-lock").read_text().split()[0]) == os.getpid()
            assert not partial.exists()
    finally:
        owner.kill()
        owner.wait()


def test_a_failed_video_leaves_no_folder_it_made_behind(svd, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.png").write_bytes((EXAMPLES / "coffee.png").read_bytes())
    (tmp_path / "bad.png").write_text("not a picture")
    small = ["--model", "tiny", "--size", "128x64", "--frames", "2", "--steps", "1"]
    # A file stands where the last folder of --out would go: the folder made before it is removed again.
    r = svd("animate", "photo.png", *small, "--out", "./photo.png.mp4/../photo.png")
    assert r.code == 1 and "part of that path is a file, not a folder" in r.err
    # A job that fails after its folders were made (the input is not a picture) removes them.
    r = svd("animate", "bad.png", *small, "--out", "made/here/bad.mp4")
    assert r.code == 1 and "not an image Pillow can read" in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "photo.png"]
