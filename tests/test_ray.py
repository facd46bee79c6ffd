"""Batches on Ray, with a real local Ray instance (loopback only) and real worker processes: the same videos
as one process, resume across both, a worker killed mid-batch, a broken input, Ctrl-C, Ray not installed."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from .conftest import EXAMPLES, encoded_stream, read_video

FAST = ["--model", "tiny", "--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "7"]
START_RAY = """
import sys, ray
ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


def _ray_env() -> dict:
    """Loopback only, no usage statistics, and a short temporary folder (Ray's socket paths must stay short)."""
    folder = tempfile.mkdtemp(prefix="svdray", dir="/tmp")
    # The instance's token travels in the environment (Ray would otherwise save one under ~/.ray).
    return {**os.environ, "RAY_TMPDIR": folder, "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32), "PYTHONUNBUFFERED": "1"}  # fmt: skip


def _descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> list[str]:
    alive = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    return alive


def _gone_within(pids: set[int], seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(pids)


@pytest.fixture(scope="module")
def ray_cluster(tiny_dir):
    """A Ray instance of our own (2 CPUs, 127.0.0.1) that `svd animate --ray-address` joins; stopped at the end."""
    env = _ray_env()
    proc = subprocess.Popen([sys.executable, "-c", START_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    address = proc.stdout.readline().strip()
    assert address.startswith("127.0.0.1:"), address
    yield address, env
    family = _descendants(proc.pid)
    proc.stdin.close()
    proc.wait(timeout=60)
    for p in _alive(family):  # never `ray stop`: it would stop every Ray on the machine
        psutil.Process(int(p.split()[0])).kill()
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    sources = [Image.open(EXAMPLES / n).convert("RGB") for n in ("chelsea.png", "coffee.png", "astronaut.png")]
    paths = []
    for i in range(count):
        path = folder / f"p{i:02d}.png"
        sources[i % 3].rotate(i * 7).save(path)
        paths.append(path)
    return paths


def _svd(*args, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svd_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def _json_lines(text: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return lines[:-1], lines[-1]


def _partials(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".svd-partial-" in p.name]


def _locks(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".svd-lock" in p.name]


def _kill_first_maker(proc: subprocess.Popen) -> tuple[list[dict], int | None]:
    """Read `svd animate --json` lines, kill -9 the worker that made the first video; return the lines and its pid.

    The driver hands that worker its next video before it reports this one, so the kill lands mid-video.
    """
    lines, killed = [], None
    for line in proc.stdout:
        data = json.loads(line)
        lines.append(data)
        if killed is None and data.get("status") == "ok":
            killed = data["worker"]["pid"]
            psutil.Process(killed).kill()
    return lines, killed


def _run_killing_first_maker(inputs: Path, out: Path, env: dict, *ray_args: str):
    """`svd animate INPUTS --json` on Ray with `ray_args`, its first video's worker killed: (exit code, the JSON
    lines, the killed pid, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "svd_cli", "animate", str(inputs), *FAST, *ray_args, "--out", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    lines, killed = _kill_first_maker(proc)
    stderr = proc.stderr.read()
    return proc.wait(timeout=60), lines, killed, stderr


def test_six_photos_on_two_workers_survive_a_killed_worker_and_equal_one_process(ray_cluster, svd, tmp_path):
    """One batch on two workers of a running cluster: one worker is killed mid-batch, one input is broken."""
    address, env = ray_cluster
    photos = _photos(tmp_path / "in", 6)
    (tmp_path / "in" / "broken.png").write_text("not a picture\n")
    out = tmp_path / "ray"
    code, lines, killed, stderr = _run_killing_first_maker(tmp_path / "in", out, env, "--ray-address", address,
                                                            "--workers", "2")  # fmt: skip
    assert code == 1, stderr
    results, summary = lines[:-1], lines[-1]

    # Every photo made exactly once, by both workers; the broken one reported once and not retried.
    ok = [x for x in results if x["status"] == "ok"]
    failed = [x for x in results if x["status"] == "failed"]
    assert sorted(x["input"] for x in ok) == sorted(str(p) for p in photos), (results, stderr)
    assert [Path(x["input"]).name for x in failed] == ["broken.png"] and "not an image" in failed[0]["error"]
    assert stderr.count("broken.png") == 1
    assert summary["done"] == 6 and summary["failed"] == 1 and summary["retried"] == 1
    assert stderr.count("died while making") == 1, stderr  # one kill is one death, not three
    assert "\x1b[" not in stderr, stderr  # Ray's own coloured message does not reach a non-terminal
    assert summary["workers"].keys() == {"w1", "w2"} and sum(summary["workers"].values()) == 6
    assert min(summary["workers"].values()) >= 1 and "Videos per Ray worker: w1 " in stderr
    assert len(list(out.glob("*.json"))) == 6 and not _partials(out) and not _locks(out)

    # The same photos in this process, with the workers' single torch thread: the very same videos.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = svd("animate", *photos, *FAST, "--out", tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    assert one.code == 0, one.err
    for photo in photos:
        ray_video, one_video = out / f"{photo.stem}.mp4", tmp_path / "one" / f"{photo.stem}.mp4"
        meta, frames = read_video(ray_video)
        assert frames.shape == (2, 64, 128, 3), photo
        assert np.array_equal(frames, read_video(one_video)[1]), photo
        assert encoded_stream(ray_video) == encoded_stream(one_video), photo

    # Rerun on Ray and without it: all 6 are skipped (decided by the driver, before any worker starts).
    (tmp_path / "in" / "broken.png").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    for extra in (["--ray-address", address, "--workers", "2"], []):
        again = svd("animate", tmp_path / "in", *FAST, *extra, "--out", out, "--json")
        assert again.code == 0, again.err
        results, summary = _json_lines(again.out)
        assert [x["status"] for x in results] == ["skipped"] * 6 and summary["done"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_an_inpainted_video_a_cinemagraph_and_an_orbit_on_a_ray_worker_are_what_one_process_makes(
    ray_cluster, svd, tmp_path
):
    """`svd inpaint` hands its videos to Ray workers as svd animate does, and `--mask` and an SV3D camera path travel
    with the request: each written by a worker, the same file as one process makes with the worker's single torch
    thread."""
    from .test_inpaint import box_mask, make_clip
    from .test_mask import mask_file

    address, env = ray_cluster
    clip, photo = make_clip(tmp_path / "clip.mp4", count=6), tmp_path / "photo.png"
    shutil.copy(EXAMPLES / "coffee.png", photo)
    fast = ("--model", "tiny", "--steps", "2", "--seed", "3")
    commands = {  # what each makes
        tmp_path / "clip.inpainted.mp4": ("inpaint", clip, "--mask", box_mask(tmp_path / "box.png"), *fast),
        tmp_path / "photo.mp4": ("animate", photo, "--mask", mask_file(tmp_path / "half.png"), "--frames", "3",
                                 "--size", "128x64", *fast),
        tmp_path / "orbit.mp4": ("animate", photo, "--model", "tiny-sv3d-p", "--elevation", "20", "--size", "64x64",
                                 "--steps", "2", "--seed", "3", "--out", tmp_path / "orbit.mp4"),
    }  # fmt: skip
    made = {}
    for output, command in commands.items():
        on_ray = _svd(*command, "--ray-address", address, "--workers", "1", "--json", env=env)
        assert on_ray.returncode == 0, on_ray.stderr
        results, summary = _json_lines(on_ray.stdout)
        assert [x["status"] for x in results] == ["ok"] and summary["workers"] == {"w1": 1}, command
        assert results[0]["worker"]["pid"] not in (os.getpid(), None) and "Videos per Ray worker" in on_ray.stderr
        made[output] = encoded_stream(output)
        output.unlink()
        output.with_name(output.name + ".json").unlink()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for output, command in commands.items():
            here = svd(*command)
            assert here.code == 0, here.err
            assert encoded_stream(output) == made[output], output
    finally:
        torch.set_num_threads(threads)
    assert read_video(tmp_path / "clip.inpainted.mp4")[1].shape == (6, 64, 128, 3)
    assert read_video(tmp_path / "photo.mp4")[1].shape == (3, 64, 128, 3)
    assert read_video(tmp_path / "orbit.mp4")[1].shape == (21, 64, 64, 3)


def test_the_only_worker_killed_once_is_restarted_and_makes_every_video(ray_cluster, tmp_path):
    """`--workers 1`: the worker is killed mid-video; Ray restarts it and the video is made on it again."""
    address, env = ray_cluster
    photos = _photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    code, lines, killed, stderr = _run_killing_first_maker(tmp_path / "in", out, env, "--ray-address", address,
                                                            "--workers", "1")  # fmt: skip
    assert code == 0, stderr
    results, summary = lines[:-1], lines[-1]
    assert summary["summary"] is True, lines
    # The killed worker's video is made again on the restarted worker, unless the worker had finished writing
    # it just before the kill landed (on a loaded machine): then the retry finds it done and does not redo it.
    skipped = [x for x in results if x["status"] == "skipped"]
    assert summary["done"] + summary["skipped"] == 4 and summary["failed"] == 0 and summary["retried"] == 1, summary
    assert len(skipped) <= 1 and all("already done" in x["reason"] for x in skipped), skipped
    assert sorted(x["input"] for x in results) == sorted(str(p) for p in photos)
    made = [x for x in results if x["status"] == "ok"]
    assert killed is not None and {x["worker"]["pid"] for x in made} - {killed}  # the restarted one made some
    assert stderr.count("died while making") == 1, stderr
    assert "\x1b[" not in stderr, stderr
    for photo in photos:
        assert read_video(out / f"{photo.stem}.mp4")[1].shape == (2, 64, 128, 3), photo
    assert not _partials(out) and not _locks(out)


def test_ctrl_c_on_a_local_ray_instance_stops_everything_and_leaves_no_partial_file(tiny_dir, tmp_path):
    _photos(tmp_path / "in", 8)
    out = tmp_path / "out"
    env = _ray_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "svd_cli", "animate", str(tmp_path / "in"), "--model", "tiny", "--frames", "6",
         "--steps", "3", "--size", "256x128", "--seed", "1", "--ray", "--workers", "2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    family: set[int] = set()
    deadline = time.monotonic() + 120
    while not (out.exists() and list(out.glob("*.mp4"))):  # Ray's processes are this process's descendants
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        family |= _descendants(proc.pid)
        time.sleep(0.05)
    family |= _descendants(proc.pid)
    assert len(family) >= 4  # at least the GCS, the raylet and the two workers
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stderr and "done" in stderr and "Traceback" not in stderr
    assert _gone_within(family, 15) == []
    assert not _partials(out)
    videos = list(out.glob("*.mp4"))
    assert 1 <= len(videos) < 8 and len(list(out.glob("*.json"))) == len(videos)
    for video in videos:
        assert read_video(video)[1].shape[0] == 6
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def test_without_ray_installed_ray_is_one_line_naming_the_install(tmp_path):
    code = "import sys; sys.modules['ray'] = None; from svd_cli.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "animate", str(EXAMPLES / "coffee.png"), "--ray"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        'svd: error: --ray: Ray is not installed in this environment; install it with: pip install "svd-cli[ray]"'
    ]


def test_a_ray_address_where_nothing_answers_fails_at_once_naming_where_it_was_set(svd, tiny_dir, tmp_path,
                                                                                    monkeypatch):  # fmt: skip
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    photo, out = EXAMPLES / "coffee.png", tmp_path / "out"
    fix = "nothing answers there (Connection refused); start a Ray head node on that machine, or correct"
    monkeypatch.chdir(tmp_path)
    user_config = tmp_path / "user-config"  # the user's own svd.toml: a working folder's may not set Ray
    for origin, how in [("", ["--ray-address", address]), (" (set by SVD_RAY_ADDRESS)", []),
                        (f" (set by ray-address in {user_config / 'svd.toml'})", [])]:  # fmt: skip
        with monkeypatch.context() as env:
            if "SVD_" in origin:
                env.setenv("SVD_RAY_ADDRESS", address)
            if "svd.toml" in origin:
                user_config.mkdir()
                env.setenv("SVD_CONFIG_DIR", str(user_config))
                (user_config / "svd.toml").write_text(f'ray-address = "{address}"\n')
            started = time.monotonic()
            r = svd("animate", photo, "--model", "tiny", *how, "--out", out / "a.mp4")
        assert r.code == 1 and len(r.lines) == 1, r.err
        assert r.lines[0].startswith(f"svd: error: --ray-address {address}{origin}: {fix}"), r.err
        assert time.monotonic() - started < 10 and not out.exists()
