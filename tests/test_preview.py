"""The live preview (--preview): a small animated WebP beside the output, rewritten after every step, gone after."""

from __future__ import annotations

import shutil

from PIL import Image

from svd_cli.io.safety import is_own_preview

from .conftest import EXAMPLES, Recorder

ARGS = ("--model", "tiny", "--frames", "2", "--steps", "3", "--size", "128x64", "--seed", "3")


class WatchingPreview(Recorder):
    """Reads the preview file whenever a denoising step is reported, as a viewer refreshing it would."""

    def __init__(self, path):
        super().__init__()
        self.path, self.seen, self.stage = path, [], None

    def start(self, stage, total=None):
        super().start(stage, total)
        self.stage = stage

    def advance(self, amount=1):
        super().advance(amount)
        if self.stage == "denoise" and self.path.exists():
            with Image.open(self.path) as picture:
                picture.seek(picture.n_frames - 1)  # every frame decodes: the file is whole
                self.seen.append((picture.format, picture.size, is_own_preview(self.path)))


def test_the_preview_is_readable_during_the_run_and_removed_after(tiny_dir, tmp_path):
    from svd_cli.batch import Summary, run_jobs
    from svd_cli.jobs import jobs_for_request
    from svd_cli.options import Request, validate
    from svd_cli.session import Session

    photo = shutil.copy(EXAMPLES / "coffee.png", tmp_path / "coffee.png")
    request = Request([photo], model="tiny", frames=2, steps=3, size=(128, 64), seed=3, decoder="tiny-taesd",
                      preview=True, out=tmp_path / "out" / "coffee.mp4")  # fmt: skip
    validate(request)
    watcher = WatchingPreview(tmp_path / "out" / "coffee.preview.webp")
    session = Session(request, watcher)
    session.resolve()
    summary = run_jobs(session, jobs_for_request(session), Summary(), reraise_unexpected=True)
    assert [r.status for r in summary.results] == ["ok"]
    # Steps 2 and 3 found the preview of the step before (step 1's report comes before its preview is written).
    assert watcher.seen == [("WEBP", (128, 64), True)] * 2
    assert any(e[0] == "note" and e[1].startswith("Preview: 3 updates, ") for e in watcher.events), watcher.events
    assert (tmp_path / "out" / "coffee.mp4").is_file() and not watcher.path.exists()


def test_a_kept_preview_stays_and_is_never_taken_for_an_input(svd, tiny_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(EXAMPLES / "coffee.png", photos / "coffee.png")
    result = svd("animate", photos, *ARGS, "--decoder", "tiny-taesd", "--keep-preview")
    assert result.code == 0, result.err
    kept = photos / "coffee.preview.webp"
    with Image.open(kept) as picture:
        assert picture.format == "WEBP" and picture.size == (128, 64)
    # The same command again finds its video done, and no new input in the preview.
    result = svd("animate", photos, *ARGS, "--decoder", "tiny-taesd", "--keep-preview", "--json")
    assert result.code == 0 and '"skipped": 1' in result.out and '"done": 0' in result.out, result.out

    # A file of the user's under the preview's name is never replaced, and the video is still made.
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(EXAMPLES / "coffee.png", mine / "coffee.png")
    Image.new("RGB", (8, 8), "red").save(mine / "coffee.preview.webp")
    before = (mine / "coffee.preview.webp").read_bytes()
    result = svd("animate", mine / "coffee.png", *ARGS, "--decoder", "tiny-taesd", "--preview")
    assert result.code == 0, result.err
    assert f"No live preview: {mine / 'coffee.preview.webp'} is a file svd did not make" in result.err
    assert (mine / "coffee.preview.webp").read_bytes() == before and (mine / "coffee.mp4").is_file()

    # With the full decoder the preview needs taesd's weights, which are not on this machine: one line, no preview.
    result = svd("animate", photos / "coffee.png", *ARGS, "--preview", "--out", f"{tmp_path / 'full'}/")
    assert result.code == 0, result.err
    assert "No live preview: it decodes with taesd, which is not downloaded yet (run `svd weights pull taesd`" in \
        result.err, result.err  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["coffee.mp4", "coffee.mp4.json"]
