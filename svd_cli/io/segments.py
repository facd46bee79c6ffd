"""The work folder of a long video: each finished segment kept on disk until the whole video is written.

An `extend` run is many clips in a row, hours on a consumer card. Each clip ("segment") is saved here the
moment it is done, atomically, so a rerun after Ctrl-C, a crash or `kill -9` continues from the last
finished segment and gives the same frames as an uninterrupted run. The folder sits hidden next to the
output (`.fox.mp4.svd-segments/`; folder scans skip hidden names) and is removed once the video is written.

Segments are only reused for the same work: the folder records a key of everything that decides a
segment's frames (first frame, settings, model, memory plan); a different key empties it first. It also
records the video's seed, so a rerun without a fixed seed continues the unfinished video with that seed
instead of drawing a new one (`unfinished_seed`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .safety import remove, temp_path_for
from .video import explain_write_error

if TYPE_CHECKING:
    import numpy as np

WORK_MARK = ".svd-segments"


def work_folder(output: Path) -> Path:
    return output.with_name(f".{output.name}{WORK_MARK}")


def segment_path(output: Path, index: int) -> Path:
    """Where segment `index` (0 is the first clip) of `output`'s long video is kept until the video is written."""
    return work_folder(output) / f"segment-{index:03d}.npy"


def unfinished_seed(output: Path) -> int | None:
    """The seed of the long video an earlier run left unfinished at `output` (finished segments on disk), or None."""
    folder = work_folder(output)
    try:
        seed = json.loads((folder / "key.json").read_text(encoding="utf-8")).get("seed")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(seed, int) or isinstance(seed, bool) or not any(folder.glob("segment-*.npy")):
        return None
    return seed


class SegmentStore:
    """Finished segments of one output, by number (0 is the first clip), made with `seed`."""

    def __init__(self, output: Path, key: str, seed: int):
        self.output = output
        self.folder = work_folder(output)
        self.key = key
        self.seed = seed

    def _path(self, index: int) -> Path:
        return segment_path(self.output, index)

    def _open(self) -> None:
        """Make the folder for this key; a folder left by other work is emptied first."""
        marker = self.folder / "key.json"
        try:
            same = json.loads(marker.read_text(encoding="utf-8")).get("key") == self.key
        except (OSError, ValueError, AttributeError):
            same = False
        if same:
            return
        if self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_for(marker)
        tmp.write_text(json.dumps({"key": self.key, "seed": self.seed}) + "\n", encoding="utf-8")
        os.replace(tmp, marker)

    def load(self, index: int) -> np.ndarray | None:
        """A segment finished by an earlier run of the same work, or None."""
        import numpy as np

        try:
            if json.loads((self.folder / "key.json").read_text(encoding="utf-8")).get("key") != self.key:
                return None
            return np.load(self._path(index), allow_pickle=False)
        except (OSError, ValueError, AttributeError):
            return None  # not there, or damaged: made again

    def save(self, index: int, frames: np.ndarray) -> None:
        """Keep segment `index`; a failed write (a full or read-only disk) is an SvdError naming the segment's file."""
        import numpy as np

        final = self._path(index)
        tmp = temp_path_for(final)
        try:
            self._open()
            # Through Python's write, not numpy's ndarray.tofile: tofile drops the OS error (a full disk reads
            # "problem writing element N to file"), Python's write keeps its errno.
            encoded = io.BytesIO()
            np.save(encoded, frames, allow_pickle=False)
            with tmp.open("wb") as f:
                f.write(encoded.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException as exc:
            remove(tmp)
            if isinstance(exc, OSError):
                raise explain_write_error(final, exc) from exc
            raise


def discard_work(output: Path) -> None:
    """The video is written: its finished segments are no longer needed."""
    shutil.rmtree(work_folder(output), ignore_errors=True)
