"""Writing frames to disk: MP4 (H.264), WebM (VP9), GIF, or a folder of lossless PNGs.

Every file is written under a temporary name in the destination folder and renamed into place only when
complete (`os.replace` is atomic on Windows and POSIX), so an interrupted or killed run never leaves a
truncated video under its final name. ffmpeg comes from imageio-ffmpeg, never from the system PATH; svd runs it
itself and reads its exit status, so a write ffmpeg could not finish (a full disk, a file size limit) is an error
in svd's words, never a truncated file taken for a video, and ffmpeg's own lines never reach the terminal.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SvdError, UsageError, first_line, ref
from ..options import FORMATS
from .credentials import SIGNED_FORMATS, SigningKey, sign
from .safety import TEMP_MARK, frame_pngs, occupant, output_digest, refusal, remove, sidecar_path, temp_path_for

__all__ = ["sidecar_path", "temp_path_for", "write_frames", "write_json", "write_video_and_recipe"]

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

MP4_CRF = 18  # visually lossless for H.264; see README "Output"


def output_suffix(fmt: str) -> str:
    """File suffix for a format; `frames` writes a folder and has none."""
    return "" if fmt == "frames" else f".{fmt}"


STYLED_MARK = ".styled"  # a restyled photo's still: photo.styled.png, never photo.png (that may be the photo)


def still_path(output: Path, fmt: str, styled: bool = False) -> Path:
    """The first frame's still beside an output: fox.mp4 -> fox.png (a restyled photo: fox.styled.png)."""
    base = output if fmt == "frames" else output.with_suffix("")
    return base.with_name(base.name + (STYLED_MARK if styled else "") + ".png")


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to `final`, on any failure delete it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        _replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise


def write_frames(
    frames: np.ndarray,
    final: str | Path,
    fps: int,
    fmt: str,
    signing: SigningKey | None = None,
    record: dict | None = None,
) -> Path:
    """Write uint8 frames (F, H, W, 3) as `fmt` at `final`, atomically; with `signing`, an MP4 or GIF carries
    content credentials for `record` (what made it, as a recipe says)."""
    _check_format(fmt)
    final = Path(final)
    try:
        with atomic_output(final) as tmp:
            _write_format(frames, tmp, fps, fmt)
            if signing is not None and fmt in SIGNED_FORMATS:
                sign(tmp, fmt, record or {}, signing, None, title=final.name)
    except (OSError, RuntimeError) as exc:
        raise SvdError(_explain_write_error(final, exc)) from exc
    return final


def write_json(data: dict, final: Path) -> None:
    """Write a JSON document atomically (the sidecar must never be half-written either)."""
    try:
        with atomic_output(final) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SvdError(_explain_write_error(final, exc)) from exc


def write_video_and_recipe(
    frames: np.ndarray,
    final: Path,
    fps: int,
    fmt: str,
    recipe: dict,
    still: Image.Image | None = None,
    signing: SigningKey | None = None,
    made_from: Path | None = None,
) -> Path:
    """Write the video, its first frame's still (if any) and its recipe so no mismatched set can exist on disk.

    All are written completely under temporary names first. Right before anything is renamed, the output is
    checked again to be free or svd's own (io/safety.py); an old video is moved aside, then the sidecar is
    renamed into place, then the still, then the video. A crash between the renames leaves a recipe without
    its video, which the next run simply makes; never a truncated file, never a recipe describing another
    video, never a video a folder scan would mistake for a photo. The still's path is the recipe's output.still.
    With `signing`, the video carries content credentials (io/credentials.py) naming `made_from` as its input,
    signed before the recipe records its size and SHA-256.
    """
    _check_format(fmt)
    sidecar = sidecar_path(final, fmt)
    still_final = Path(recipe["output"]["still"]) if still is not None else None
    tmp_video, tmp_json = temp_path_for(final), temp_path_for(sidecar)
    tmp_still = temp_path_for(still_final) if still_final is not None else None
    aside, renamed = None, False
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _write_format(frames, tmp_video, fps, fmt)
        if signing is not None and fmt in SIGNED_FORMATS:
            sign(tmp_video, fmt, recipe, signing, made_from, title=final.name)
        recipe["output"]["bytes"], recipe["output"]["sha256"] = output_digest(tmp_video)
        if still is not None:
            still.save(tmp_still, format="PNG")
            if signing is not None:  # a PNG, signed as each frame of a frames folder, by the model that drew it
                image_model = (recipe.get("image") or {}).get("model")
                sign(tmp_still, "frames", recipe, signing, made_from, title=still_final.name, model=image_model)
        tmp_json.write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
        occ = occupant(final, fmt)
        if occ.state == "foreign":
            raise SvdError(refusal(occ), path=final)
        if occ.state == "own":
            aside = final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}-old-{uuid.uuid4().hex[:8]}")
            os.replace(final, aside)
        os.replace(tmp_json, sidecar)
        renamed = True
        if still is not None:
            os.replace(tmp_still, still_final)
        os.replace(tmp_video, final)
    except BaseException as exc:
        remove(tmp_video)
        remove(tmp_json)
        if tmp_still is not None:
            remove(tmp_still)
        if aside is not None and not renamed:
            with contextlib.suppress(OSError):
                os.replace(aside, final)  # nothing new is in place: the old video and its recipe stay as they were
        if isinstance(exc, (OSError, RuntimeError)):
            raise SvdError(_explain_write_error(final, exc)) from exc
        raise
    if aside is not None:
        remove(aside)
    return final


def explain_write_error(final: Path, exc: Exception) -> SvdError:
    """One line naming `final` and the fix, for an OSError met while writing there."""
    return SvdError(_explain_write_error(final, exc), path=final)


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a video file or PNG folder as uint8 RGB, one at a time (a long video never sits in memory);
    a `UsageError` naming the path if it is neither."""
    import numpy as np

    if path.is_dir():
        yield from _png_frames(path)
        return
    if not path.is_file():
        problem = "not a regular file (a device, a pipe or a socket)" if path.exists() else "no such file or folder"
        raise UsageError(f"{path}: {problem}; give the path of a video.", path=path)
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        width, height = next(reader)["size"]
        count = 0
        for raw in reader:
            count += 1
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
    except (OSError, RuntimeError, StopIteration, KeyError) as exc:
        raise _unreadable(path) from exc
    if count == 0:
        raise _unreadable(path)


def _png_frames(folder: Path) -> Iterator[np.ndarray]:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    pngs = frame_pngs(folder)
    if not pngs:
        raise UsageError(f"{folder} holds no PNG frames; give a video file or a folder svd wrote with "
                         f"{ref('format')} frames.", path=folder)  # fmt: skip
    for png in pngs:
        try:
            with Image.open(png) as image:
                yield np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise _unreadable(png) from exc


def _unreadable(path: Path) -> UsageError:
    return UsageError(f"Could not read {path}: it is not a picture or video ffmpeg can decode; give an MP4, WebM or "
                      "GIF, or a folder of PNG frames.", path=path)  # fmt: skip


def frame_rate(path: Path) -> float | None:
    """The frame rate a video file declares (None for a folder of frames, or a file that declares none)."""
    if path.is_dir():
        return None
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        fps = next(reader).get("fps")
    except (OSError, RuntimeError, StopIteration) as exc:
        raise _unreadable(path) from exc
    finally:
        reader.close()
    return float(fps) if fps else None


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise SvdError(f"Unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}.")


def _write_format(frames: np.ndarray, path: Path, fps: int, fmt: str) -> None:
    if fmt == "frames":
        _write_png_folder(frames, path)
    elif fmt == "gif":
        _write_gif(frames, path, fps)
    else:
        _write_ffmpeg(frames, path, fps, fmt)


def _write_ffmpeg(frames: np.ndarray, path: Path, fps: int, fmt: str) -> None:
    import imageio_ffmpeg

    count, height, width, _ = frames.shape
    # Convert with the BT.709 (HD) matrix and tag the stream so players show the colours we computed.
    params = ["-vf", "scale=out_color_matrix=bt709:out_range=tv", "-frames:v", str(count)]
    if fmt == "mp4":
        codec = "libx264"
        params += ["-crf", str(MP4_CRF), "-preset", "medium", "-movflags", "+faststart",
                   "-x264-params", "colorprim=bt709:transfer=bt709:colormatrix=bt709"]  # fmt: skip
    else:
        codec = "libvpx-vp9"
        params += ["-crf", "30", "-b:v", "0", "-row-mt", "1",
                   "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]  # fmt: skip
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
        "-pix_fmt", "rgb24", "-r", str(fps), "-i", "-", "-an", "-vcodec", codec, "-pix_fmt", "yuv420p",
        "-v", "error", *params, str(path),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: ffmpeg can never block on a full one
        # Its own process group, so Ctrl-C reaches svd alone, which stops ffmpeg below.
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log,
                                   start_new_session=True,
                                   creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))  # fmt: skip
        try:
            with contextlib.suppress(BrokenPipeError):  # ffmpeg stopped early: its status and its words say why
                try:
                    for frame in frames:
                        process.stdin.write(frame.tobytes())
                finally:
                    process.stdin.close()
            process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        if process.returncode != 0:
            log.seek(0)
            raise OSError(f"ffmpeg stopped: {_ffmpeg_error(log.read(), process.returncode)}")
    if not path.is_file() or path.stat().st_size == 0:
        raise OSError(f"ffmpeg produced no output for {path.name}")


def _ffmpeg_error(log: bytes, status: int) -> str:
    """ffmpeg's first error line, without its "[muxer @ 0x...]" prefix: the cause (later lines are its effects);
    or the signal that ended it."""
    for line in log.decode("utf-8", "replace").splitlines():
        line = re.sub(r"^\[[^\]]*\]\s*", "", line).strip()
        if line:
            return line
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else f"signal {-status}"
        # SIGXFSZ: the file outgrew the process's limit on a file's size, which a write reports as EFBIG.
        return f"{os.strerror(errno.EFBIG)} ({name})" if name == "SIGXFSZ" else f"it was ended by {name}"
    return f"it exited with status {status}"


def _write_gif(frames: np.ndarray, path: Path, fps: int) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    # GIF delays are counted in hundredths of a second, so e.g. 12 fps plays at 12.5 fps.
    duration = max(2, round(100 / fps)) * 10
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)


def _write_png_folder(frames: np.ndarray, folder: Path) -> None:
    from PIL import Image

    folder.mkdir()
    digits = max(4, len(str(len(frames))))
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"frame_{i:0{digits}d}.png", format="PNG", compress_level=4)


def _replace(tmp: Path, final: Path) -> None:
    if tmp.is_dir() and final.exists():
        # A folder cannot replace a non-empty folder in one step: move the old one aside first.
        old = final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}-old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        remove(old)
        return
    os.replace(tmp, final)


def _explain_write_error(final: Path, exc: Exception) -> str:
    text = str(exc)
    code = getattr(exc, "errno", None)
    out = ref("out")
    # The operating system's own words for the cause; ffmpeg's messages carry no errno, only those words.
    if code == errno.ENOSPC or os.strerror(errno.ENOSPC) in text:
        return f"Could not write {final}: {_os_reason(errno.ENOSPC)}; free some space or choose another {out} folder."
    if code == errno.EROFS or os.strerror(errno.EROFS) in text:
        return f"Could not write {final}: {_os_reason(errno.EROFS)}; choose a folder on a writable disk with {out}."
    if code == errno.EFBIG or os.strerror(errno.EFBIG) in text:
        return (f"Could not write {final}: {_os_reason(errno.EFBIG)} for that file system or for this process's "
                f"limit on a file's size (ulimit -f); choose another {out} folder or raise the limit.")  # fmt: skip
    if isinstance(exc, PermissionError) or code == errno.EACCES or os.strerror(errno.EACCES) in text:
        return f"Could not write {final}: {_os_reason(errno.EACCES)}; choose a folder you can write to with {out}."
    if isinstance(exc, (NotADirectoryError, FileExistsError)) or code in (errno.EEXIST, errno.ENOTDIR):
        return f"Could not write {final}: part of that path is a file, not a folder; choose another {out}."
    reason = getattr(exc, "strerror", None) or first_line(exc, type(exc).__name__)
    return f"Could not write {final}: {reason}."


def _os_reason(code: int) -> str:
    """The operating system's own words for `code`, inside a sentence: 'no space left on device'."""
    words = os.strerror(code)
    return words[:1].lower() + words[1:]
