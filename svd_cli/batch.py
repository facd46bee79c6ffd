"""Batches: the planned jobs (jobs.py) made into videos on disk, one model load for all of them.

`run_jobs` skips outputs that are already done with the same recipe (resume: `decide_jobs`, on the driver). With
a prompt or a style it first makes every first frame with one load of the text-to-image model and frees it. Then
an executor makes the videos: `LocalExecutor` in this process on one model load, or `ray_executor.RayExecutor` on
Ray workers that each load the model once. Every video goes through `run_one` -> `claim_and_make` ->
`make_video`, which writes the video, its still and its recipe sidecar atomically; each result is reported as it
happens. One bad input (or prompt) fails that job only; the batch goes on.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelLoadError, ModelUnavailableError, SvdError, UsageError, first_line, ref, spell_refs
from .io.gallery import BatchPage, PageEntry
from .io.latents import discard_latents, latents_blocked, latents_path, work_key, write_latents
from .io.preview import discard_preview, preview_path
from .io.recipe import build_recipe, resume_state
from .io.safety import Busy, claim, sidecar_path
from .io.segments import discard_work, unfinished_seed
from .io.video import explain_write_error, still_path, write_video_and_recipe
from .jobs import Job, JobList
from .memory.ram import NotEnoughMemoryError
from .models.files import file_sha256
from .options import recorded_settings
from .result import Animation
from .session import Session

if TYPE_CHECKING:
    from .stages.first_frame import FirstFrame


@dataclass
class JobResult:
    job: Job
    status: str  # ok | skipped | failed
    reason: str = ""
    seconds: float = 0.0
    video: Animation | None = None  # the video made, or the finished one found (from its recipe)
    unexpected: bool = False  # a bug, not the input's fault: the edge offers the traceback
    worker: dict | None = None  # which Ray worker made it: {"id": "w1", "node": "10.0.0.5", "pid": 4242}

    def as_json(self) -> dict:
        job, video = self.job, self.video
        data = {"status": self.status, "input": str(job.input) if job.input else None, "path": str(job.output),
                "seed": video.seed if video else job.seed}  # fmt: skip
        if job.prompt is not None:
            data["prompt"] = job.prompt
        if video:
            data.update(
                frames=video.frame_count,
                fps=video.fps,
                width=video.width,
                height=video.height,
                model=video.model,
                steps=video.settings["steps"],
                duration=round(video.duration, 3),
            )
            segments, reused = video.segments
            if segments > 1:  # a long video: its clips, and how many an earlier run had finished
                data["segments"], data["segments_reused"] = segments, reused
            if video.memory_profile is not None:
                data["memory"] = video.memory_profile
        data["seconds"] = round(self.seconds, 2)
        if video and video.warnings:
            data["warnings"] = list(video.warnings)
        if self.worker:
            data["worker"] = self.worker
        if self.reason:
            data["error" if self.status == "failed" else "reason"] = self.reason
        return data


@dataclass
class Summary:
    results: list[JobResult] = field(default_factory=list)
    non_images: int = 0
    started: float = field(default_factory=time.monotonic)
    interrupted: bool = False
    workers: dict[str, int] | None = None  # Ray runs: videos made per worker ("w1": 6, ...)
    retried: int = 0  # Ray runs: videos started again after their worker died

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.count("failed") else 0

    def as_json(self) -> dict:
        done = [r for r in self.results if r.status == "ok"]
        return {
            "summary": True,
            "done": len(done),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "non_images_skipped": self.non_images,
            "interrupted": self.interrupted,
            "seconds": round(time.monotonic() - self.started, 2),
            "seconds_per_video": round(sum(r.seconds for r in done) / len(done), 2) if done else None,
        } | ({"workers": dict(self.workers), "retried": self.retried} if self.workers is not None else {})


# --- running ------------------------------------------------------------------------------------------


def expected_recipe(session: Session, job: Job, fmt: str, sha256: Callable[[Path], str]) -> dict | None:
    """The recipe this run would write for `job` (for the resume check), without loading the model; it hashes the
    input, so it is asked for only when a finished output is there to compare with."""
    from .io.images import upright_size

    if job.input is None:
        return _recipe(session, job, fmt, sha256, session.settings_for(job.seed, session.video_size()))
    image_size = upright_size(job.input)
    if image_size is None:
        return None
    size = session.video_size(image_size)
    return _recipe(session, job, fmt, sha256, session.settings_for(job.seed, size))


def _recipe(
    session: Session,
    job: Job,
    fmt: str,
    sha256: Callable[[Path], str],
    settings,
    video: Animation | None = None,
    seconds=None,
) -> dict:
    """The recipe of `job`: the one a finished `video` is written with, or (without one) what it would be. The
    files it was made from (input, mask, end picture, keyframes) are recorded with their SHA-256 (`sha256`)."""
    req = session.request
    mask = session.mask_for(job.input, job.rel_dir) if job.input is not None else None
    image = None
    if session.uses_image_model:
        image = session.image_settings(job.prompt) | {"model": session.image_source.describe()}
    return build_recipe(
        input_path=job.input,
        input_sha256=sha256(job.input) if job.input is not None else None,
        output=job.output,
        fmt=fmt,
        settings=settings,
        fps=video.fps if video is not None else settings.fps,
        shape=(video.frame_count, video.width, video.height) if video is not None else None,
        seed_fixed=job.seed_fixed,
        recorded=recorded_settings(session.request) | session.recorded_files(),
        model=session.model_record(),
        image=image,
        still=_still(session, job, fmt),
        stages=video.stages + [{"stage": "write", "format": fmt, "fps": video.fps}] if video is not None else None,
        runtime=session.runtime() if video is not None else None,
        seconds=seconds,
        mask=file_record(mask, sha256) if mask is not None else None,
        end=file_record(req.end, sha256) if req.end is not None else None,
        keyframes=[file_record(path, sha256) for path in job.keyframes] or None,
    )


def file_record(path: Path, sha256: Callable[[Path], str]) -> dict:
    """A file a video was made from, as its recipe records it: where it is (absolute) and what it holds."""
    return {"path": str(path.resolve()), "sha256": sha256(path)}


def _still(session: Session, job: Job, fmt: str) -> Path | None:
    """Where `job`'s first frame is saved beside its video: only when the image model made or restyled it."""

    return still_path(job.output, fmt, styled=job.input is not None) if session.uses_image_model else None


def make_first_frame(session: Session, job: Job) -> FirstFrame:
    """The first-frame stage of one job: its input image (restyled with a style), or its prompt drawn."""
    started = time.monotonic()
    if job.input is None:
        frame = session.first_frame_from_prompt(job.prompt, job.seed)
    else:
        frame = session.first_frame_from_file(job.input, job.rel_dir)
        if job.keyframes:
            frame = frame.through(job.keyframes, session.request.fit, session.request.background)
        if session.request.style is not None:
            frame = session.restyle(frame, job.seed)
    frame.seconds = time.monotonic() - started
    return frame


def make_video(
    session: Session, job: Job, fmt: str, sha256: Callable[[Path], str], frame: FirstFrame | None = None
) -> JobResult:
    """One job through every stage: first frame (unless made already), animate, write (video, still, recipe)."""

    started = time.monotonic()
    earlier = frame.seconds if frame is not None else 0.0  # a first frame made in the batch's first phase
    # 1. The first frame (unless the batch's first phase made it already), and the settings for its size.
    if frame is None:
        frame = make_first_frame(session, job)
    settings = session.settings_for(job.seed, frame.picture.size)
    # 2. Animate it (with extend, the clips that continue it, each kept as it finishes, for a rerun; with a live
    #    preview rewritten after every step), then the post stages in the order of stages/post.py.
    #    A draft being finished (svd finish) has its latents kept: they are decoded instead.
    req = session.request
    preview = preview_path(job.output, fmt) if req.preview or req.keep_preview else None
    keep = latents_path(job.output, fmt) if req.keep_latents else None
    if keep is not None and latents_blocked(keep):
        raise SvdError(f"{keep} exists and svd did not make it; svd never replaces it: move it away, or drop "
                       f"{ref('keep_latents')}.", path=keep)  # fmt: skip
    kept = job.finish.read(job.output) if job.finish is not None else None
    try:
        video = session.make(frame, settings, job.output, preview=preview, latents=kept)
        # 3. Write the kept latents, then the video, its still and its recipe; then the finished clips (the
        #    preview, a finished draft's latents) are no longer needed.
        recipe = _recipe(session, job, fmt, sha256, settings, video, time.monotonic() - started + earlier)
        still = frame.picture if session.uses_image_model else None
        session.progress.start("write")
        try:
            if keep is not None:
                write_latents(video.latents, keep, work_key(recipe))
            write_video_and_recipe(video.frames, job.output, video.fps, fmt, recipe, still=still,
                                   signing=session.signing_key(), made_from=job.input)  # fmt: skip
        except BaseException:
            session.progress.abandon()  # a failed write reports no "Writing video" time, only its error
            raise
        session.progress.end()
    finally:
        if preview is not None and not req.keep_preview:
            discard_preview(preview)
    if job.finish is not None:
        discard_latents(job.finish.path)
    discard_work(job.output)
    # On disk now: a batch keeps no pictures (nor latents).
    video.path, video.frames, video.first_frame, video.latents = job.output, None, None, None
    return JobResult(job, "ok", seconds=time.monotonic() - started + earlier, video=video)


def claim_and_make(
    session: Session, job: Job, fmt: str, sha256: Callable[[Path], str], frame: FirstFrame | None = None
) -> JobResult:
    """`make_video` while holding the output's claim, so two runs never work on (or clean up) one output.

    Another live process's output is skipped; one that process finished meanwhile is done, not redone.
    """

    expected = functools.partial(expected_recipe, session, job, fmt, sha256)  # asked only if needed
    make = functools.partial(make_video, session, job, fmt, sha256, frame)
    return claimed(job, fmt, session.request.overwrite, expected, make, _still(session, job, fmt))


def claimed(
    job: Job,
    fmt: str,
    overwrite: bool,
    expected: Callable[[], dict | None],
    make: Callable[[], JobResult],
    still: Path | None = None,
) -> JobResult:
    """`make()` while holding `job`'s output claim, unless the output is done with the recipe `expected()` gives
    (or made otherwise, and not `overwrite`), a file svd did not make, or another live process's (skipped)."""
    try:
        with claim(job.output):
            state, why, earlier = resume_state(job.output, fmt, expected, job.seed_fixed, still)
            if state == "foreign" or (state in ("done", "differs") and not overwrite):
                return JobResult(job, "skipped", reason=why, video=_found(earlier))
            return make()
    except Busy as busy:
        return JobResult(job, "skipped", reason=busy.reason(job.output))
    except OSError as exc:  # the claim is the job's first write: a read-only or full folder fails here
        raise explain_write_error(job.output, exc) from exc


def _found(recipe: dict | None) -> Animation | None:
    """The finished video an earlier run recorded (None: no recipe of svd's, or one too old to describe it)."""
    try:
        return Animation.from_recipe(recipe) if recipe is not None else None
    except (KeyError, TypeError):
        return None


def _naming(job: Job, reason: str) -> str:
    """Every failure line names its input (or prompt)."""
    return reason if job.label in reason else f"{job.label}: {reason}"


class FileHashes:
    """SHA-256 of input files, each read once per process (several seeds of one photo share it)."""

    def __init__(self) -> None:
        self._known: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path not in self._known:
            self._known[path] = file_sha256(path)
        return self._known[path]


def run_one(
    session: Session,
    job: Job,
    sha256: Callable[[Path], str],
    reraise_unexpected: bool = False,
    frame: FirstFrame | None = None,
) -> JobResult:
    """Make one video and say how it went. The same in every executor (this process, or a Ray worker).

    A failure that belongs to this input (a broken image, a failed write, out of memory even on `min`) is a
    failed result; one that dooms every job (the model cannot be loaded, a bad request) is raised.
    """
    work = lambda: claim_and_make(session, job, session.request.format, sha256, frame)  # noqa: E731
    return attempt(job, work, reraise_unexpected)


def decide_jobs(
    session: Session, job_list: JobList, summary: Summary, on_result: Callable[[JobResult], None], sha256: Callable
) -> list[Job]:
    """The resume decisions, made once by the driver: report finished outputs as skipped, return the rest."""
    req = session.request
    summary.non_images = job_list.non_images
    if session.source is None:
        session.resolve()
    if session.uses_image_model:  # resolved once (resolve_image_model knows)
        session.resolve_image_model()
    todo: list[Job] = []
    for job in job_list.jobs:
        _continue_unfinished(session, job)
        if not job.output.exists():  # nothing to compare, no photo to hash; claim_and_make checks again
            todo.append(job)
            continue
        expected = functools.partial(expected_recipe, session, job, req.format, sha256)
        state, why, earlier = resume_state(job.output, req.format, expected, job.seed_fixed,
                                           _still(session, job, req.format))  # fmt: skip
        if state == "todo" or (req.overwrite and state in ("done", "differs")):
            todo.append(job)
        else:
            result = JobResult(job, "skipped", reason=why, video=_found(earlier))
            summary.results.append(result)
            on_result(result)
    return todo


def _continue_unfinished(session: Session, job: Job) -> None:
    """A long video an earlier run left unfinished keeps its seed when the user fixed none: its finished clips
    were made with that seed, and a newly drawn one would throw them away. A fixed seed is never replaced
    (clips of another seed are not reused: the work folder's key holds the seed)."""
    if job.seed_fixed or not session.request.extend:
        return
    seed = unfinished_seed(job.output)
    if seed is not None and seed != job.seed:
        session.progress.note(f"{job.output}: an earlier run left it unfinished; continuing it with its seed {seed}")
        job.seed = seed


# How a job becomes a video in an executor: (session, job, sha256, reraise_unexpected) -> its result. svd animate's
# is `run_one`; svd inpaint passes its own (picklable: a Ray worker runs it).
Maker = Callable[[Session, Job, Callable[[Path], str], bool], JobResult]


class LocalExecutor:
    """Makes the videos one after the other in this process, on one model load."""

    def run(
        self,
        session: Session,
        todo: list[Job],
        *,
        total: int,
        summary: Summary,
        on_result: Callable[[JobResult], None],
        sha256: Callable[[Path], str],
        reraise_unexpected: bool = False,
        frames: dict[int, FirstFrame] | None = None,
        make: Maker | None = None,
    ) -> None:
        """`frames`: first frames made already (the prompt batches' first phase), by job index; `make`: how a job
        becomes a video (`run_one`, svd animate's, unless given)."""
        progress = session.progress
        frames = frames or {}
        for job in todo:
            progress.note(f"[{job.index + 1}/{total}] {job.label} -> {job.output} (seed {job.seed})")
            if make is not None:
                result = make(session, job, sha256, reraise_unexpected)
            else:
                frame = frames.pop(job.index).restored() if job.index in frames else None
                result = run_one(session, job, sha256, reraise_unexpected, frame)
            progress.end()
            summary.results.append(result)
            on_result(result)


def run_jobs(
    session: Session,
    job_list: JobList,
    summary: Summary,
    on_result: Callable[[JobResult], None] | None = None,
    reraise_unexpected: bool = False,
    executor=None,
    words: Callable[[str], str] = spell_refs,
) -> Summary:
    """Animate every job of `job_list` into `summary` (so a Ctrl-C still leaves the results so far).

    The driver decides what is left to do (resume); `executor` makes those videos: `LocalExecutor` (the
    default) in this process, `ray_executor.RayExecutor` on Ray workers. Results come back through
    `on_result` in the order they finish, and onto the batch page with `gallery` (its reasons spelled by
    `words`). `reraise_unexpected` lets a bug's traceback through instead of failing the job with its one line.
    """
    on_result = on_result or (lambda r: None)
    page = _batch_page(session, job_list)  # a page svd may not replace: refused before any work
    if page is None:
        return _run_jobs(session, job_list, summary, on_result, reraise_unexpected, executor)

    def shown(result: JobResult) -> None:
        on_result(result)
        _update_page(session, page, lambda: page.add(page_entry(session, result, words)))

    try:
        _run_jobs(session, job_list, summary, shown, reraise_unexpected, executor)
    except BaseException:
        _update_page(session, page, lambda: page.close(interrupted=True))
        raise
    _update_page(session, page, page.close)
    return summary


def _batch_page(session: Session, job_list: JobList) -> BatchPage | None:
    """The page `gallery` asks for, in the folder that holds every output of the run."""
    if not session.request.gallery or not job_list.jobs:
        return None
    try:
        folder = Path(os.path.commonpath([job.output.parent.resolve() for job in job_list.jobs]))
    except ValueError:  # Windows: outputs on two drives share no folder
        why = f"{ref('gallery')} puts one page in the folder that holds every output, and they are on different drives"
        raise UsageError(f"{why}: give {ref('out')}.", option="gallery") from None
    return BatchPage(folder, len(job_list.jobs))


def _update_page(session: Session, page: BatchPage, update: Callable[[], None]) -> None:
    """Write the page; a page that cannot be written is said once and the videos go on without it."""
    if page.failed:
        return
    try:
        update()
    except OSError as exc:
        page.failed = True
        session.progress.note(f"Could not write the batch page {page.path} ({exc.strerror or exc}); the videos go on "
                              "without it.")  # fmt: skip


def page_entry(session: Session, result: JobResult, words: Callable[[str], str] = spell_refs) -> PageEntry:
    """A result as the batch page shows it: the settings the video was made with that differ from the model's."""
    job, video = result.job, result.video
    status = {"ok": "made"}.get(result.status, result.status)
    if status == "skipped" and video is not None and job.output.exists():
        status = "found"
    settings = video.settings if video is not None else {}
    defaults = session.defaults
    changed = {k: v for k, v in settings.items() if k in defaults and v != defaults[k]}
    return PageEntry(status, job.input.name if job.input is not None else repr(job.prompt),
                     video=job.output if status in ("made", "found") else None, picture=job.input,
                     seed=video.seed if video is not None else job.seed, model=video.model if video else None,
                     changed=changed, seconds=result.seconds if status == "made" else None,
                     recipe=sidecar_path(job.output, session.request.format) if video is not None else None,
                     reason=words(result.reason))  # fmt: skip


def _run_jobs(
    session: Session,
    job_list: JobList,
    summary: Summary,
    on_result: Callable[[JobResult], None],
    reraise_unexpected: bool,
    executor,
) -> Summary:
    if executor is not None and session.uses_image_model:
        raise UsageError(
            f"{ref('ray')} does not make first frames from {ref('prompt')} or {ref('style')} yet: run those "
            "batches without Ray.",
            option="ray",
        )
    sha256 = FileHashes()
    todo = decide_jobs(session, job_list, summary, on_result, sha256)
    if not todo:
        return summary
    run = dict(total=len(job_list.jobs), summary=summary, on_result=on_result, sha256=sha256,
               reraise_unexpected=reraise_unexpected)  # fmt: skip
    if not session.uses_image_model:
        (executor or LocalExecutor()).run(session, todo, **run)
        return summary
    progress = session.progress
    with tempfile.TemporaryDirectory(prefix="svd-stills-") as staging:
        # Phase 1: every first frame with one load of the image model, kept on disk (not in memory).
        frames: dict[int, FirstFrame] = {}
        for job in list(todo):
            progress.note(f"[{job.index + 1}/{len(job_list.jobs)}] first frame of {job.label} (seed {job.seed})")
            made = attempt(job, lambda j=job: make_first_frame(session, j), reraise_unexpected)
            progress.end()
            if isinstance(made, JobResult):
                todo.remove(job)
                summary.results.append(made)
                on_result(made)
                continue
            frames[job.index] = made.staged(Path(staging) / f"{job.index}.png")
        session.release_image_model()
        # Phase 2: every video with one load of SVD, in this process (the stills wait in a local folder).
        LocalExecutor().run(session, todo, frames=frames, **run)
    return summary


def attempt(job: Job, work: Callable[[], object], reraise_unexpected: bool):
    """`work()` for one job, or the job's failure: a failure that dooms every job (the model cannot be
    loaded, a usage error) ends the run; any other ends only this job."""
    try:
        return work()
    except (UsageError, ModelLoadError, ModelUnavailableError, NotEnoughMemoryError):
        raise  # every job would fail the same way: end the run with one line
    except SvdError as exc:
        return JobResult(job, "failed", reason=_naming(job, exc.marked()))
    except Exception as exc:
        if reraise_unexpected:
            raise
        reason = f"unexpected error ({type(exc).__name__}: {first_line(exc)})"
        return JobResult(job, "failed", reason=_naming(job, reason), unexpected=True)
