"""The batch page (`--gallery`, io/gallery.py), opened in headless Chromium (Debian's `chromium` package) as a
person would open it: every finished video plays, the failure is listed, the page is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from .conftest import EXAMPLES

FAST = ["--model", "tiny", "--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "3"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium (root needs --no-sandbox), given 4 s of page time to load and start the videos."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail(
            "the batch page is tested in Chromium: install Debian's chromium package (apt-get install chromium)"
        )
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
               "--virtual-time-budget=4000", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_batch_page_plays_every_video_and_lists_the_failure_in_chromium(svd, tmp_path):
    photos = tmp_path / "in"
    photos.mkdir()
    for photo in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(EXAMPLES / photo, photos / photo)
    (photos / "broken.png").write_text("not a picture\n")
    out = tmp_path / "out"
    r = svd("animate", photos, *FAST, "--gallery", "--out", f"{out}/")
    assert r.code == 1, r.err  # one input failed
    page = out / "index.html"
    text = page.read_text()
    assert not re.search(r"""(src|href)="(https?:)?//""", text)  # nothing from the network: works from a USB stick
    assert 'http-equiv="refresh"' not in text  # the run is over: no more reloads

    dom = chromium("--dump-dom", page.as_uri()).stdout
    videos = re.findall(r"<video [^>]*>", dom)
    assert sorted(re.search(r'src="([^"]+)"', v).group(1) for v in videos) == [
        "astronaut.mp4", "chelsea.mp4", "coffee.mp4", "rocket.mp4"]  # fmt: skip
    assert all('data-state="playing"' in v for v in videos), videos  # each reached readyState >= 2
    (failure,) = re.findall(r'<li class="failed">(.*?)</li>', dom)
    assert "broken.png" in failure and "not an image" in failure
    assert "4 made, 0 from earlier runs, 0 skipped, 1 failed of 5" in dom

    shot = tmp_path / "page.png"
    chromium("--window-size=1200,900", f"--screenshot={shot}", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (900, 1200, 3) and pixels.std() > 20  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # pictures and videos, not just text


def test_a_page_svd_did_not_write_is_never_replaced(svd, tmp_path):
    (tmp_path / "index.html").write_text("<html>my own page</html>")
    r = svd("animate", EXAMPLES / "coffee.png", *FAST, "--gallery", "--out", tmp_path / "coffee.mp4")
    assert r.code == 2
    assert r.err.strip().splitlines() == [f"svd: error: {tmp_path / 'index.html'} exists and svd did not write it; "
                                          "svd never replaces it: move it away, or drop --gallery."]  # fmt: skip
    assert (tmp_path / "index.html").read_text() == "<html>my own page</html>" and not (
        tmp_path / "coffee.mp4"
    ).exists()


def test_a_running_batchs_page_reloads_itself_until_the_run_ends(tmp_path):
    from svd_cli.io.gallery import BatchPage, PageEntry

    page = BatchPage(tmp_path, total=2)
    page.add(PageEntry("failed", "a.png", reason="a.png: not an image"))
    assert '<meta http-equiv="refresh" content="10">' in page.path.read_text()
    assert "running: 1 of 2 done" in page.path.read_text()
    page.close(interrupted=True)
    assert "refresh" not in page.path.read_text() and "stopped (interrupted)" in page.path.read_text()
