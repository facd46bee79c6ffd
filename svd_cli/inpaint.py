"""`svd inpaint`: the masked region of an existing video made again by the video model (stages/inpaint.py), every
other pixel of every frame kept.

One video in, one out: `NAME.inpainted.mp4` beside the input by default, never the input itself, written as every
svd video is (claimed while it is made, written atomically with its recipe, the watermark unless turned off);
the same command again finds it done (the recipe holds the input's and the mask's SHA-256) and skips it. Its
videos go through an executor as svd animate's do (`make_inpainted` is the maker), in this process or on Ray.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

from .batch import JobResult, attempt, claimed, file_record
from .errors import UsageError, ref
from .io.recipe import build_recipe
from .io.safety import recipe_for
from .io.video import frame_rate, output_suffix, read_frames, write_video_and_recipe
from .jobs import Job
from .options import BY_NAME, FORMATS, random_seed
from .result import Animation
from .session import Session
from .stages import Clip

INPAINTED = ".inpainted"  # photo.mp4 -> photo.inpainted.mp4
FPS_RANGE = BY_NAME["fps"].range  # the frame rates SVD is conditioned on


def inpainted_path(video: Path, fmt: str) -> Path:
    """Where the inpainted video goes by default: beside the input, NAME.inpainted.mp4 (a folder for frames)."""
    stem = video.stem if video.suffix.lower() in {f".{f}" for f in FORMATS} or video.is_file() else video.name
    return video.with_name(f"{stem}{INPAINTED}{output_suffix(fmt)}")


def inpaint_jobs(videos: list[Path], request, output: Path | None = None) -> list[Job]:
    """One job a video, its seed drawn here (a video made again after its worker died keeps it) and its output
    `output` or `inpainted_path`; an output that is its own input is refused before any work."""
    jobs = []
    for index, video in enumerate(videos):
        target = output or inpainted_path(video, request.format)
        if target.resolve() == video.resolve():
            raise UsageError(f"{ref('out')} {target} is the input video; svd never replaces it: choose another "
                             "name.", option="out")  # fmt: skip
        seed = request.seed if request.seed is not None else random_seed()
        jobs.append(Job(index=index, input=video, rel_dir=Path(), seed=seed, seed_fixed=request.seed is not None,
                        output=target))  # fmt: skip
    return jobs


def make_inpainted(
    session: Session, job: Job, sha256: Callable[[Path], str], reraise_unexpected: bool = False, *, mask: Path
) -> JobResult:
    """Inpaint `job.input` where `mask` is white into `job.output`, with `session`'s request (model, steps,
    memory, format...); a failure that belongs to this video is a failed result. An executor's maker (with the
    mask bound), so Ray workers run it as they run svd animate's videos."""
    req = session.request
    expected = functools.partial(_expected_recipe, session, job, mask, sha256)
    make = functools.partial(_inpaint, session, job, mask, sha256)
    return attempt(job, lambda: claimed(job, req.format, req.overwrite, expected, make), reraise_unexpected)


def _inpaint(session: Session, job: Job, mask: Path, sha256: Callable[[Path], str]) -> JobResult:
    """Read the video and mask, make the region again window by window, run the post stages, write."""
    import numpy as np

    from .stages.inpaint import inpaint_frames, padded, video_mask, working_size

    started, req, progress = time.monotonic(), session.request, session.progress
    # 1. The input's frames, frame rate and size; the mask's weights for every frame.
    frames = np.stack(list(read_frames(job.input)))
    count, height, width = frames.shape[:3]
    if count < 2:
        raise UsageError(f"{job.input} has {count} frame; svd inpaint needs a video of 2 or more.", path=job.input)
    weights = video_mask(mask, count, (width, height), req.mask_feather)
    # 2. The settings: the model's, at the video's size (grown to multiples of 64 if need be) and (within what SVD
    #    was trained on) its frame rate.
    size = working_size(width, height)
    frames, weights = padded(frames, size), padded(weights, size, kept=True)
    fps = _frame_rate(job.input)
    settings = _settings(session, job, size, fps)
    if session.video_model is None:
        session.load(settings)
    animate = functools.partial(session.video_model.make_frames, progress=progress)
    # 3. The region made again, window by window; then the post stages the request asks for (the watermark).
    made, windows = inpaint_frames(animate, frames, weights, settings, progress)
    made = np.ascontiguousarray(made[:, :height, :width])  # the video's own size again
    record = {"stage": "inpaint", "model": session.source.name, "settings": settings.as_dict(),
              "first_frame": "region filled from the pixels around it", "windows": windows}  # fmt: skip
    if size != (width, height):
        record["grown_to"] = list(size)
    clip = session.finish(Clip(made, max(1, round(fps)), stages=[record]))
    # 4. The video and its recipe, atomically.
    recipe = _recipe(session, job, mask, sha256, settings, clip, time.monotonic() - started)
    progress.start("write")
    try:
        write_video_and_recipe(clip.frames, job.output, clip.fps, req.format, recipe,
                               signing=session.signing_key(), made_from=job.input)  # fmt: skip
    except BaseException:
        progress.abandon()
        raise
    progress.end()
    video = Animation.of(
        clip, job.seed, session.source.name, settings.as_dict(), session.video_model.memory_plan.profile
    )
    video.path, video.frames = job.output, None
    return JobResult(job, "ok", seconds=time.monotonic() - started, video=video)


def _settings(session: Session, job: Job, size: tuple[int, int], fps: float):
    """The model's settings at the video's size, conditioned on its frame rate (within SVD's 3-30)."""
    settings = session.settings_for(job.seed, size)
    return settings.replace(fps=min(max(round(fps), FPS_RANGE[0]), FPS_RANGE[1]))


def _frame_rate(video: Path) -> float:
    """The input's frame rate: the file's, a frames folder's recipe's, else SVD's usual 7."""
    fps = frame_rate(video)
    if fps is None and video.is_dir():
        recipe = recipe_for(video, "frames")
        fps = (recipe or {}).get("output", {}).get("fps")
    return float(fps or 7)


def _recipe(session: Session, job: Job, mask: Path, sha256, settings, clip: Clip | None = None, seconds=None) -> dict:
    """The recipe of an inpainted video: the written one, or (without a clip) what this run would write."""
    recipe = build_recipe(
        input_path=job.input,
        input_sha256=_digest(job.input, sha256),
        output=job.output,
        fmt=session.request.format,
        settings=settings,
        fps=clip.fps if clip is not None else settings.fps,
        shape=(len(clip.frames), clip.width, clip.height) if clip is not None else None,
        seed_fixed=job.seed_fixed,
        recorded={"mask_feather": session.request.mask_feather, "watermark": session.request.watermark},
        model=session.model_record(),
        stages=clip.stages + [{"stage": "write", "format": session.request.format, "fps": clip.fps}] if clip else None,
        runtime=session.runtime() if clip is not None else None,
        seconds=seconds,
        mask=file_record(mask, lambda path: _digest(path, sha256)),
    )
    return {"command": "inpaint", **recipe}


def _expected_recipe(session: Session, job: Job, mask: Path, sha256) -> dict:
    """The recipe this run would write (for the resume check), from the video's first frame and frame rate."""
    from .stages.inpaint import working_size

    first = next(iter(read_frames(job.input)))
    settings = _settings(session, job, working_size(first.shape[1], first.shape[0]), _frame_rate(job.input))
    return _recipe(session, job, mask, sha256, settings)


def _digest(path: Path, sha256: Callable[[Path], str]) -> str:
    """SHA-256 of a file, or of a folder of frames (its PNGs' digests in order)."""
    if not path.is_dir():
        return sha256(path)
    import hashlib

    return hashlib.sha256("".join(sha256(png) for png in sorted(path.glob("*.png"))).encode()).hexdigest()
