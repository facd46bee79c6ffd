"""Batches: from the inputs a user named to videos on disk, one model load for all of them.

1. `plan_jobs` expands files, folders, globs and stdin (or prompts: `prompt`, a `prompts` file, stdin) into
   a sorted list of jobs, names every output and refuses templates that escape the output folder or
   collide, before any work starts.
2. `run_jobs` skips outputs that are already done with the same recipe (resume: `decide_jobs`, on the
   driver). With a prompt or a style it first makes every first frame with one load of the text-to-image
   model and frees it. Then an executor makes the videos: `LocalExecutor` in this process on one model
   load, or `ray_executor.RayExecutor` on Ray workers that each load the model once. Every video goes
   through `run_one` -> `claim_and_make` -> `make_video`, which writes the video, its still and its recipe
   sidecar atomically; each result is reported as it happens. One bad input (or prompt) fails that job
   only; the batch goes on.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelLoadError, ModelUnavailableError, SvdError, UsageError, first_line, ref
from .io.recipe import build_recipe, resume_state
from .io.safety import check_outputs
from .io.segments import unfinished_seed
from .io.video import output_suffix
from .memory.ram import NotEnoughMemoryError
from .models.files import file_sha256
from .options import Request, check_template, fill_template, random_seed, recorded_settings, with_defaults
from .result import Animation
from .session import Session
from .stages.loop import check_loop

if TYPE_CHECKING:
    from .stages.first_frame import FirstFrame

GLOB_CHARS = set("*?[")
MAX_NAME_BYTES = 200  # file systems allow 255 bytes; the sidecar and temporary names add up to 45


@dataclass
class Job:
    """One video to make: from which image (or prompt), where it goes, with which seed."""

    index: int
    input: Path | None  # the input image; None for a video from a prompt
    rel_dir: Path  # folder of the input relative to the folder it was found under (mirrored under the output)
    seed: int
    seed_fixed: bool
    output: Path = Path()
    prompt: str | None = None  # the text its first frame is drawn from (no input image)

    @property
    def label(self) -> str:
        """How messages name the job: its input file, or its prompt."""
        if self.input is not None:
            return str(self.input)
        short = self.prompt if len(self.prompt) <= 60 else self.prompt[:57] + "..."
        return f"prompt {short!r}"


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
class Plan:
    jobs: list[Job]
    non_images: int = 0  # files in scanned folders that are not images (skipped, counted)


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


# --- 1. planning -----------------------------------------------------------------------------------------


def plan_for_request(session: Session, stdin: Iterable[str] | None = None) -> Plan:
    """The whole plan of a run, with every usage error raised before any download or model load.

    Output names may use the model's defaults ({fps}, {frames}); they are known without the network for
    named models and folders. Only a Hub repo that is not downloaded yet is resolved (fetched) first.
    """
    from .models.sources import check_kind, peek_defaults

    req = session.request
    check_template(req.name or "{stem}")
    check_kind(req.model, "svd")
    defaults = peek_defaults(req.model)
    if session.uses_image_model:
        check_kind(req.image_model, "text-to-image")
        _check_style_steps(req, peek_defaults(req.image_model, "text-to-image"))
    if defaults is None:
        session.resolve()
        defaults = session.defaults
    frames = req.frames or defaults["frames"]
    check_loop(req.loop, frames + req.extend * (frames - 1), req.loop_frames)
    return plan_jobs(req, defaults, stdin)


def _check_style_steps(req: Request, image_defaults: dict | None) -> None:
    """Image-to-image runs strength x steps of its steps: at least one, or it would change nothing."""
    if req.style is None:
        return
    steps = req.image_steps or (image_defaults or {}).get("steps")
    if steps is not None and int(steps * req.style_strength) < 1:
        raise UsageError(
            f"{ref('style_strength')} {req.style_strength} of {steps} {ref('image_steps')} runs no step, so the "
            f"photo would not change: raise {ref('style_strength')} or {ref('image_steps')}.",
            option="style_strength",
        )


def plan_jobs(req: Request, defaults: dict | None, stdin: Iterable[str] | None = None) -> Plan:
    """Expand inputs, pick seeds and name every output; raise UsageError before any work on a bad plan.

    `defaults` are the model's (for names that use {fps} or {frames}); None if they are not known yet.
    """
    from .io.images import image_extensions
    from .io.safety import OwnOutputs

    prompts = read_prompts(req, stdin)
    if prompts is not None:
        jobs = [
            Job(index=i, input=None, rel_dir=Path(), seed=seed, seed_fixed=fixed, prompt=text)
            for i, (text, (seed, fixed)) in enumerate((t, s) for t in prompts for s in _seeds(req))
        ]
        name_outputs(jobs, req, defaults or {})
        return Plan(jobs=jobs)

    image_exts = image_extensions()
    own_outputs = OwnOutputs()  # a rerun must not animate the videos and frames of the last run
    found: dict[Path, Path] = {}  # input -> folder it was found under (for mirroring)
    non_images = 0
    for arg in req.inputs:
        if arg == "-":
            lines = stdin if stdin is not None else sys.stdin
            for line in lines:
                line = line.strip()
                if line:
                    _add_file(found, Path(line), from_stdin=True)
            continue
        path = Path(arg).expanduser()
        if path.is_dir():
            non_images += _scan_folder(path, req.recursive, image_exts, own_outputs, found)
        elif path.exists():
            _add_file(found, path)
        elif GLOB_CHARS & set(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            files = [m for m in matches if m.is_file() and m not in own_outputs]
            if not files:
                raise UsageError(f"{arg}: no file matches this pattern.")
            base = _glob_base(arg)
            for m in files:
                found.setdefault(m, base)
        else:
            raise UsageError(f"{arg}: no such file or folder.")
    if not found:
        raise UsageError(f"No input images found (folders are scanned for image files; {ref('recursive')} descends).")

    jobs: list[Job] = []
    for path in sorted(found, key=lambda p: str(p)):
        base = found[path]
        rel_dir = path.parent.relative_to(base) if base != path.parent else Path()
        for seed, fixed in _seeds(req):
            jobs.append(Job(index=len(jobs), input=path, rel_dir=rel_dir, seed=seed, seed_fixed=fixed))
    name_outputs(jobs, req, defaults or {})
    return Plan(jobs=jobs, non_images=non_images)


def _scan_folder(folder: Path, recursive: bool, image_exts, own_outputs, found: dict[Path, Path]) -> int:
    """Add the photos in `folder` to `found` (each under `folder`, for mirroring); return how many files were not
    images. Hidden files, svd's own outputs and the stills it saved are not inputs."""
    non_images = 0
    for p in folder.rglob("*") if recursive else folder.glob("*"):
        if not p.is_file() or _hidden(p.relative_to(folder)):
            continue
        if p.suffix.lower() not in image_exts:
            non_images += 1
        elif p not in own_outputs and not _is_our_still(p):
            found.setdefault(p, folder)
    return non_images


def read_prompts(req: Request, stdin: Iterable[str] | None = None) -> list[str] | None:
    """The prompts of a run (None when it starts from images): `prompt`, or the lines of the `prompts` file
    (or stdin for -), without blank lines and # comments. With a style the prompt describes the photos."""
    if req.style is not None:
        return None
    if req.prompt is not None:
        return [req.prompt.strip()]
    if req.prompts is None:
        return None
    if str(req.prompts) == "-":
        lines = list(stdin if stdin is not None else sys.stdin)
        where = "stdin"
    else:
        try:
            lines = Path(req.prompts).expanduser().read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise UsageError(f"{ref('prompts')} {req.prompts}: no such file.", option="prompts") from None
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise UsageError(f"{ref('prompts')} {req.prompts}: cannot be read ({why}).", option="prompts") from None
        where = str(req.prompts)
    prompts = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not prompts:
        raise UsageError(
            f"{ref('prompts')} {where}: no prompts in it (one per line; blank lines and # comments are skipped).",
            option="prompts",
        )
    return prompts


def slug(text: str, limit: int = 60) -> str:
    """A file name from a prompt: 'A red fox, in snow!' -> 'a-red-fox-in-snow' (cut at a word, at most `limit`)."""
    import re
    import unicodedata

    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", plain.lower())
    name = ""
    for word in words:
        if len(name) + len(word) + 1 > limit and name:
            break
        name = f"{name}-{word}" if name else word[:limit]
    return name or "prompt"


def _is_our_still(path: Path) -> bool:
    """A first-frame still an earlier run wrote beside its video (so a rerun over the folder skips it)."""
    import json

    from .io.video import STYLED_MARK

    stem = path.stem[: -len(STYLED_MARK)] if path.stem.endswith(STYLED_MARK) else path.stem
    for tail in (".mp4.json", ".gif.json", ".webm.json", ".frames.json", ".json"):  # every format's sidecar
        sidecar = path.with_name(stem + tail)
        if not sidecar.is_file():
            continue
        try:
            still = json.loads(sidecar.read_text(encoding="utf-8")).get("output", {}).get("still")
        except (OSError, ValueError, AttributeError):
            continue
        if still and Path(still).name == path.name:
            return True
    return False


def _add_file(found: dict[Path, Path], path: Path, from_stdin: bool = False) -> None:
    if not path.exists():
        where = " (read from stdin)" if from_stdin else ""
        raise UsageError(f"{path}{where}: no such file.")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; pass folders as arguments, not through stdin.")
    found.setdefault(path, path.parent)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _glob_base(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path()


def _seeds(req: Request) -> list[tuple[int, bool]]:
    """(seed, fixed?) per video of one image. Random seeds are drawn now (a new one for every video), so
    names that include {seed} are known before any work starts."""
    if req.seeds:
        return [(s, True) for s in req.seeds]
    if req.variations:
        if req.seed is not None:
            return [(req.seed + i, True) for i in range(req.variations)]
        return [(random_seed(), False) for _ in range(req.variations)]
    if req.seed is not None:
        return [(req.seed, True)]
    return [(random_seed(), False)]


def name_outputs(jobs: list[Job], req: Request, defaults: dict) -> None:
    """Set each job's output path from the output and name settings; refuse escapes and collisions."""
    fmt = req.format
    suffix = output_suffix(fmt)
    several_per_image = bool(req.seeds and len(req.seeds) > 1) or bool(req.variations and req.variations > 1)
    template = req.name or ("{stem}-{seed}" if several_per_image else "{stem}")
    check_template(template)
    values = with_defaults(req, defaults) if defaults else {"fps": req.fps, "frames": req.frames}

    out = req.out
    single_file = (
        out is not None
        and len(jobs) == 1
        and req.name is None
        and not out.is_dir()
        and not req.out_is_folder
        and (out.suffix.lower() == suffix if suffix else not out.exists())
    )
    if out is not None and not single_file and out.suffix and out.suffix.lower() in (".mp4", ".gif", ".webm"):
        if len(jobs) > 1:
            raise UsageError(
                f"{ref('out')} {out}: names one file but this run makes {len(jobs)} videos; give a folder instead.",
                option="out",
            )
        fixed = out.with_suffix(suffix or "")
        raise UsageError(
            f"{ref('out')} {out}: the suffix does not match {ref('format')} {fmt}; use {fixed}.", option="out"
        )
    seen: dict[Path, Job] = {}
    for job in jobs:
        if single_file:
            job.output = out
        else:
            named = job.prompt if job.prompt is not None else (req.style or req.prompt or "")
            fields = {
                "stem": job.input.stem if job.input is not None else slug(job.prompt),
                "prompt": slug(named) if named else "",
                "seed": job.seed,
                "index": job.index,
                "model": Path(req.model).name,
                "fps": values.get("fps"),
                "frames": values.get("frames"),
            }
            name = fill_template(template, fields) + suffix
            if len(name.encode("utf-8")) > MAX_NAME_BYTES:
                raise UsageError(
                    f"{ref('name')} {template!r}: gives a file name of {len(name.encode('utf-8'))} bytes for "
                    f"{job.label}; file systems allow {MAX_NAME_BYTES}: use a shorter template.",
                    option="name",
                )
            beside = job.input.parent if job.input is not None else Path()  # prompts: the working folder
            folder = (out / job.rel_dir) if out is not None else beside
            job.output = folder / name
        key = Path(os.path.normcase(os.path.abspath(job.output)))
        if key in seen:
            other = seen[key]
            raise UsageError(
                f"{ref('name')} {template!r}: {other.label} and {job.label} would both be written to {job.output}; "
                f"add {{seed}} or {{index}} to {ref('name')}, or use separate {ref('out')} folders.",
                option="name",
            )
        seen[key] = job
    check_outputs([(job.input, job.output) for job in jobs], fmt)


# --- 2. running ------------------------------------------------------------------------------------------


def expected_recipe(session: Session, job: Job, fmt: str, sha256: Callable[[Path], str]) -> dict | None:
    """The recipe this run would write for `job` (for the resume check), without loading the model; it hashes the
    input, so it is asked for only when a finished output is there to compare with."""
    from .io.images import upright_size

    if job.input is None:
        return _recipe(session, job, fmt, None, session.settings_for(job.seed, session.video_size()))
    image_size = upright_size(job.input)
    if image_size is None:
        return None
    size = session.video_size(image_size)
    return _recipe(session, job, fmt, sha256(job.input), session.settings_for(job.seed, size))


def _recipe(
    session: Session, job: Job, fmt: str, sha256: str | None, settings, video: Animation | None = None, seconds=None
) -> dict:
    """The recipe of `job`: the one a finished `video` is written with, or (without one) what it would be."""
    image = None
    if session.uses_image_model:
        image = session.image_settings(job.prompt) | {"model": session.image_source.describe()}
    return build_recipe(
        input_path=job.input,
        input_sha256=sha256,
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
    )


def _still(session: Session, job: Job, fmt: str) -> Path | None:
    """Where `job`'s first frame is saved beside its video: only when the image model made or restyled it."""
    from .io.video import still_path

    return still_path(job.output, fmt, styled=job.input is not None) if session.uses_image_model else None


def make_first_frame(session: Session, job: Job) -> FirstFrame:
    """The first-frame stage of one job: its input image (restyled with a style), or its prompt drawn."""
    started = time.monotonic()
    if job.input is None:
        frame = session.first_frame_from_prompt(job.prompt, job.seed)
    else:
        frame = session.first_frame_from_file(job.input)
        if session.request.style is not None:
            frame = session.restyle(frame, job.seed)
    frame.seconds = time.monotonic() - started
    return frame


def make_video(
    session: Session, job: Job, fmt: str, sha256: Callable[[Path], str], frame: FirstFrame | None = None
) -> JobResult:
    """One job through every stage: first frame (unless made already), animate, write (video, still, recipe)."""
    from .io.segments import discard_work
    from .io.video import write_video_and_recipe

    started = time.monotonic()
    earlier = frame.seconds if frame is not None else 0.0  # a first frame made in the batch's first phase
    # 1. The first frame (unless the batch's first phase made it already), and the settings for its size.
    if frame is None:
        frame = make_first_frame(session, job)
    settings = session.settings_for(job.seed, frame.picture.size)
    # 2. Animate it; with extend, the clips that continue it (each kept as it finishes, for a rerun).
    clip = session.animate(frame, settings, job.output)
    # 3. The post stages, in the order of stages/post.py.
    clip = session.finish(clip)
    video = Animation.of(clip, job.seed, session.source.name, settings.as_dict(), session.animator.plan.profile)
    # 4. Write the video, its still and its recipe; then the finished clips are no longer needed.
    digest = sha256(job.input) if job.input is not None else None
    recipe = _recipe(session, job, fmt, digest, settings, video, time.monotonic() - started + earlier)
    still = frame.picture if session.uses_image_model else None
    session.progress.start("write")
    write_video_and_recipe(clip.frames, job.output, clip.fps, fmt, recipe, still=still)
    session.progress.end()
    discard_work(job.output)
    video.path, video.frames = job.output, None  # on disk now: a batch keeps no frames in memory
    return JobResult(job, "ok", seconds=time.monotonic() - started + earlier, video=video)


def claim_and_make(
    session: Session, job: Job, fmt: str, sha256: Callable[[Path], str], frame: FirstFrame | None = None
) -> JobResult:
    """`make_video` while holding the output's claim, so two runs never work on (or clean up) one output.

    Another live process's output is skipped; one that process finished meanwhile is done, not redone.
    """
    from .io.safety import Busy, claim
    from .io.video import explain_write_error

    req = session.request
    try:
        with claim(job.output):
            expected = functools.partial(expected_recipe, session, job, fmt, sha256)  # asked only if needed
            state, why, earlier = resume_state(job.output, fmt, expected, job.seed_fixed, _still(session, job, fmt))
            if state == "foreign" or (state in ("done", "differs") and not req.overwrite):
                return JobResult(job, "skipped", reason=why, video=_found(earlier))
            return make_video(session, job, fmt, sha256, frame)
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
    return _attempt(job, work, reraise_unexpected)


def decide_jobs(
    session: Session, plan: Plan, summary: Summary, on_result: Callable[[JobResult], None], sha256: Callable
) -> list[Job]:
    """The resume decisions, made once by the driver: report finished outputs as skipped, return the rest."""
    req = session.request
    summary.non_images = plan.non_images
    if session.source is None:
        session.resolve()
    if session.uses_image_model and session.image_source is None:
        session.resolve_image_model()
    todo: list[Job] = []
    for job in plan.jobs:
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
    ) -> None:
        """`frames`: first frames made already (the prompt batches' first phase), by job index."""
        progress = session.progress
        frames = frames or {}
        for job in todo:
            progress.note(f"[{job.index + 1}/{total}] {job.label} -> {job.output} (seed {job.seed})")
            frame = frames.pop(job.index).restored() if job.index in frames else None
            result = run_one(session, job, sha256, reraise_unexpected, frame)
            progress.end()
            summary.results.append(result)
            on_result(result)


def run_jobs(
    session: Session,
    plan: Plan,
    summary: Summary,
    on_result: Callable[[JobResult], None] | None = None,
    reraise_unexpected: bool = False,
    executor=None,
) -> Summary:
    """Animate every job of `plan` into `summary` (so a Ctrl-C still leaves the results so far).

    The driver decides what is left to do (resume); `executor` makes those videos: `LocalExecutor` (the
    default) in this process, `ray_executor.RayExecutor` on Ray workers. Results come back through
    `on_result` in the order they finish. `reraise_unexpected` lets a bug's traceback through instead of
    failing the job with its one line.
    """
    if executor is not None and session.uses_image_model:
        raise UsageError(
            f"{ref('ray')} does not make first frames from {ref('prompt')} or {ref('style')} yet: run those "
            "batches without Ray.",
            option="ray",
        )
    on_result = on_result or (lambda r: None)
    sha256 = FileHashes()
    todo = decide_jobs(session, plan, summary, on_result, sha256)
    if not todo:
        return summary
    run = dict(total=len(plan.jobs), summary=summary, on_result=on_result, sha256=sha256,
               reraise_unexpected=reraise_unexpected)  # fmt: skip
    if not session.uses_image_model:
        (executor or LocalExecutor()).run(session, todo, **run)
        return summary
    progress = session.progress
    with tempfile.TemporaryDirectory(prefix="svd-stills-") as staging:
        # Phase 1: every first frame with one load of the image model, kept on disk (not in memory).
        frames: dict[int, FirstFrame] = {}
        for job in list(todo):
            progress.note(f"[{job.index + 1}/{len(plan.jobs)}] first frame of {job.label} (seed {job.seed})")
            made = _attempt(job, lambda j=job: make_first_frame(session, j), reraise_unexpected)
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


def _attempt(job: Job, work: Callable[[], object], reraise_unexpected: bool):
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
