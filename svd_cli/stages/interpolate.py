"""The interpolate stage: N times the frame rate over the same motion, by motion-compensated interpolation.

The built-in interpolator is ffmpeg's `minterpolate` from the ffmpeg that imageio-ffmpeg ships (no download).
It estimates block motion between neighbouring frames and draws each in-between frame along it, so a moving
object sits where it should be halfway, instead of the ghosted double image of a crossfade.

Frames go through ffmpeg as raw planes, never converted: minterpolate only takes YUV, and an RGB->YUV->RGB
round trip changes pixels by up to 2 levels, so the G, B and R planes are handed over *as* the Y, U and V planes
of yuv444p. The filter then estimates motion on G (the plane closest to brightness) and moves all three planes
along the same vectors, and frames that fall on an original's time come back bit-exact.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OptionError, SvdError, ref
from ..options import BY_NAME
from ..progress import NullProgress, Progress
from . import Clip, PostStage, StageContext

if TYPE_CHECKING:
    import numpy as np

    from ..models.rife import Interpolator

METHODS = ("minterpolate", "rife")
FACTORS = BY_NAME["interpolate"].range  # the schema's range, written there once
# Chosen by measurement: PSNR of 2x in-between frames against the true ones (384x224 camera pan / zoom / object
# moving over a photo): this 31.2 / 34.1 / 38.7 dB; 16x16 blocks with scene-change detection on (ffmpeg's
# defaults, and the first guess) 26.4 / 31.9 / 35.7; bilateral estimation 30.8 / 33.2 / 38.5; a blend
# 18.5 / 22.9 / 25.5. Scene-change detection is off because a generated clip is one shot and it took a fast pan
# for a cut, falling back to repeated frames. vsbmc made no measurable difference and is kept for motion edges.
MINTERPOLATE = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:mb_size=8:scd=none"


def filter_string(fps: int, factor: int) -> str:
    """The ffmpeg filter that makes `factor` times `fps` frames per second."""
    return f"minterpolate=fps={fps * factor}:{MINTERPOLATE}"


def interpolate_clip(
    clip: Clip,
    factor: int,
    method: str = "minterpolate",
    loop: bool = False,
    progress: Progress | None = None,
    weights: str | Path | Interpolator | None = None,
) -> Clip:
    """`clip` at `factor` times its frame rate over the same motion, the originals kept at every factor-th frame.

    A clip of F frames becomes (F-1)*factor+1 frames; with `loop` (its last frame flows back into its first) the
    wrap-around is interpolated as well and it becomes F*factor frames. `method="rife"` needs `weights`: a loaded
    RIFE network (a session loads it once) or a RIFE 4.13 safetensors file (models/rife.py says how it was checked).
    """
    import numpy as np

    if isinstance(factor, bool) or not isinstance(factor, int) or not FACTORS[0] <= factor <= FACTORS[1]:
        raise OptionError(
            "interpolate", factor, f"must be a whole number between {FACTORS[0]} and {FACTORS[1]}.", allowed=FACTORS
        )
    if method not in METHODS:
        raise OptionError("interpolator", method, f"choose one of {', '.join(METHODS)}.", allowed=METHODS)
    if method == "rife" and weights is None:
        raise OptionError("interpolator", method, "needs a RIFE 4.13 safetensors file of weights.", allowed=METHODS)
    if factor == 1:
        return clip
    if method == "rife" and isinstance(weights, (str, Path)):
        from ..models.rife import load_interpolator

        weights = load_interpolator(weights)
    progress = progress or NullProgress()
    frames = clip.frames
    if loop:
        frames = np.concatenate([frames, frames[:1]])
    wanted = (len(frames) - 1) * factor + 1
    params = filter_string(clip.fps, factor) if method == "minterpolate" else f"rife-4.13 {Path(weights.path).name}"
    if len(frames) == 1:
        out = frames
    else:
        progress.start("interpolate", wanted)
        try:
            if method == "minterpolate":
                out = _minterpolate(frames, clip.fps, params, wanted, progress)
            else:
                out = _rife(frames, factor, weights, progress)
        finally:
            progress.end()
    if loop:
        out = out[:-1]  # the last frame is frame 0 again
    record = {"stage": "interpolate", "factor": factor, "method": method, "params": params, "loop": bool(loop)}
    return Clip(out, clip.fps * factor, [*clip.stages, record], list(clip.warnings))


def _minterpolate(frames: np.ndarray, fps: int, params: str, wanted: int, progress: Progress) -> np.ndarray:
    """Run the bundled ffmpeg on `frames` and read back exactly `wanted` frames."""
    import imageio_ffmpeg
    import numpy as np

    count, height, width, _ = frames.shape
    # minterpolate stops at the second-to-last input frame (it needs a frame after the pair it interpolates):
    # one copy of the last frame lets it reach the last original, and nothing after it is kept.
    planes = np.ascontiguousarray(frames[..., [1, 2, 0]].transpose(0, 3, 1, 2))  # G, B, R planes
    planes = np.concatenate([planes, planes[-1:]])
    size = f"{width}x{height}"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-filter_threads", "1",
        "-f", "rawvideo", "-pix_fmt", "yuv444p", "-s", size, "-r", str(fps), "-i", "-",
        "-vf", params, "-f", "rawvideo", "-pix_fmt", "yuv444p", "-",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: list[bytes] = []
    # stdin and stderr are served from threads so a large clip cannot fill a pipe while we wait on another.
    feeder = threading.Thread(target=_feed, args=(process.stdin, planes), daemon=True)
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    feeder.start()
    reader.start()
    frame_bytes = 3 * width * height
    out = np.empty((wanted, 3, height, width), dtype=np.uint8)
    got = 0
    try:
        while got < wanted:
            chunk = process.stdout.read(frame_bytes)
            if len(chunk) < frame_bytes:
                break
            out[got] = np.frombuffer(chunk, np.uint8).reshape(3, height, width)
            got += 1
            progress.advance()
        while process.stdout.read(1 << 20):  # frames past the last original are not ours
            pass
    finally:
        process.stdout.close()
        code = process.wait()
        feeder.join()
        reader.join()
    if code != 0:
        raise SvdError(
            f"The interpolate stage failed in ffmpeg ({_first_error(errors)}); "
            f"leave out {ref('interpolate')} to keep the clip as it is.",
            stage="interpolate",
        )
    if got < wanted:
        raise SvdError(
            f"The interpolate stage got {got} of {wanted} frames back from ffmpeg; "
            f"leave out {ref('interpolate')} to keep the clip as it is.",
            stage="interpolate",
        )
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1)[..., [2, 0, 1]])


def _rife(frames: np.ndarray, factor: int, interpolator: Interpolator, progress: Progress) -> np.ndarray:
    """Originals as they are, and RIFE's frames at times 1/factor .. (factor-1)/factor between each pair."""
    import numpy as np

    out = [frames[0]]
    progress.advance()
    for a, b in zip(frames[:-1], frames[1:], strict=True):
        for r in range(1, factor):
            out.append(interpolator.in_between(a, b, r / factor))
            progress.advance()
        out.append(b)
        progress.advance()
    return np.stack(out)


def _feed(pipe, planes: np.ndarray) -> None:
    """Write every frame to ffmpeg and close its input; an early exit of ffmpeg is reported by its exit code."""
    with contextlib.suppress(OSError):  # BrokenPipeError included
        for frame in planes:
            pipe.write(frame.tobytes())
    with contextlib.suppress(OSError):
        pipe.close()


def _first_error(errors: list[bytes]) -> str:
    """ffmpeg's first message without its '[filter @ 0x...]' prefix."""
    text = b"".join(errors).decode("utf-8", "replace")
    for line in text.splitlines():
        line = re.sub(r"^(\[[^\]]*\]\s*)+", "", line).strip()
        if line:
            return line.rstrip(".")
    return "it stopped without saying why"


def _read_rife(source, request) -> Interpolator:
    from ..models.rife import load_interpolator

    return load_interpolator(source, None)


def _run(clip: Clip, context: StageContext) -> Clip:
    req, loop = context.request, context.request.loop != "off"
    if context.model is None:
        return interpolate_clip(clip, req.interpolate, loop=loop, progress=context.progress)
    return interpolate_clip(clip, req.interpolate, "rife", loop, context.progress, weights=context.model)


def interpolated_frame_count(frames: int, factor: int, loop: bool) -> int:
    """Frames after interpolating `frames` by `factor`: (F-1)*factor+1, or F*factor for a loop (its wrap-around)."""
    return frames * factor if loop else (frames - 1) * factor + 1


def _frames_after(frames: int, request) -> int:
    return interpolated_frame_count(frames, request.interpolate, request.loop != "off")


INTERPOLATE = PostStage("interpolate", wanted=lambda req: req.interpolate > 1,
                        run=_run, frames_after=_frames_after, model_kind="interpolator", read_model=_read_rife,
                        needs_model=lambda req: req.interpolator != "minterpolate")  # fmt: skip
