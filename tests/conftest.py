"""Shared fixtures: an isolated svd cache with the tiny model, and ways to run `svd` like a user does."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from svd_cli.progress import Progress

# One torch (OpenMP) thread in every test process and every svd process a test starts, set before torch is
# imported: the suite runs on two pytest workers (pyproject.toml), which share the cores instead of each
# fighting over all of them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    """Every test sees its own svd cache, HF cache and config folder, and no SVD_* settings of the machine."""
    base = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    for key in list(os.environ):
        if key.startswith("SVD_") or key in ("NO_COLOR", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN"):
            mp.delenv(key)
    mp.setenv("SVD_HOME", str(base / "svd"))
    mp.setenv("SVD_CONFIG_DIR", str(base / "config"))
    mp.setenv("HF_HOME", str(base / "hf"))
    mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield base
    mp.undo()


@pytest.fixture(scope="session")
def tiny_dir(isolated_home) -> Path:
    from svd_cli.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture
def svd(capsys, monkeypatch):
    """Run `svd ARGS...` in this process (fast: torch is imported once per session)."""
    from svd_cli.cli import main

    def run(*args: str, stdin: str | None = None) -> Result:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_subprocess(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120, **kw):
    """Run `python -m svd_cli ARGS...` as a separate process, as a shell script would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "svd_cli", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        **kw,
    )


def read_video(path: Path) -> tuple[dict, np.ndarray]:
    """Decode a video file back into (metadata, frames as uint8 array)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(height, width, 3) for f in reader]
    return meta, np.stack(frames)


def encoded_stream(path: Path) -> bytes:
    """An MP4's media data (its top-level mdat boxes): the encoded frames, the same bit for bit for the same video
    whatever content credentials (signed anew, with new ids, on every write) sit beside them."""
    data, offset, media = path.read_bytes(), 0, b""
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8]
        header = 8
        if size == 1:  # a 64-bit size follows the type
            size, header = int.from_bytes(data[offset + 8 : offset + 16], "big"), 16
        size = size or len(data) - offset  # 0: the box runs to the end of the file
        if kind == b"mdat":
            media += data[offset + header : offset + size]
        offset += size
    assert media, f"{path} has no media data"
    return media


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def ffmpeg_failing_with(folder: Path, code: int) -> Path:
    """An ffmpeg whose disk fails after the first bytes land (the write boundary), as the real one reports it: its
    output file begun, one error line with the OS's words for `code` on stderr, a failing exit status, stdin
    not read to the end. Patch `imageio_ffmpeg.get_ffmpeg_exe` to return it."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "failing-ffmpeg"
    program.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "sys.stdin.buffer.read(4096)\n"
        "open(sys.argv[-1], 'wb').write(bytes(4096))\n"
        f"sys.stderr.write('[out#0/mp4 @ 0x55d0c0] Error writing trailer: {os.strerror(code)}\\n')\n"
        "sys.exit(228)\n"
    )
    program.chmod(0o755)
    return program


class Recorder(Progress):
    """A Progress that remembers what a stage reported (start, advance, end), for tests of progress reporting."""

    def __init__(self):
        self.events = []

    def note(self, message):
        self.events.append(("note", message))

    def start(self, stage, total=None):
        self.events.append(("start", stage, total))

    def advance(self, amount=1):
        self.events.append(("advance", amount))

    def end(self):
        self.events.append(("end",))


TINY_FAST = ["--model", "tiny", "--frames", "6", "--steps", "2", "--fps", "8", "--size", "256x128"]


# The test files that take longest, handed out first: pytest-xdist gives a worker the next file whenever it is
# free, so the many short files even out the end of the run instead of one long file running on alone.
LONGEST_FIRST = ("test_compile.py", "test_ray.py", "test_memory.py", "test_simulate.py", "test_batch.py",
                 "test_long_videos.py", "test_hub_download.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the other files keep their order


def pytest_sessionfinish(session, exitstatus):
    """A run in which no test passed is a failure, even if everything was skipped (CI must not go green)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter is not None else 0
    if exitstatus == 0 and passed == 0:
        session.exitstatus = 5
