"""Batches: from the inputs a user named to videos on disk, one model load for all of them.

1. `plan_jobs` expands files, folders, globs and stdin into a sorted list of jobs, names every output and
   refuses templates that escape the output folder or collide, before any work starts.
2. `run_jobs` skips outputs that are already done with the same recipe (resume: `decide_jobs`, on the
   driver), then an executor makes the rest: `LocalExecutor` in this process on one model load, or
   `ray_executor.RayExecutor` on Ray workers that each load the model once. Every video goes through
   `run_one` -> `make_video`, which writes the video and its recipe sidecar atomically; each result is
   reported as it happens. One bad input fails that job only; the batch goes on.
"""

from __future__ import annotations

import glob
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelLoadError, ModelUnavailableError, SvdError, UsageError, ref
from .io.recipe import build_recipe, file_sha256, resume_state
from .io.video import output_suffix
from .options import Request, check_template, with_defaults
from .session import Session

GLOB_CHARS = set("*?[")


@dataclass
class Job:
    """One video to make: which image, where it goes, with which seed."""

    index: int
    input: Path
    rel_dir: Path  # folder of the input relative to the folder it was found under (mirrored under the output)
    seed: int
    seed_fixed: bool
    output: Path = Path()


@dataclass
class JobResult:
    job: Job
    status: str  # ok | skipped | failed
    reason: str = ""
    seconds: float = 0.0
    recipe: dict | None = None
    unexpected: bool = False  # a bug, not the input's fault: the edge offers the traceback
    worker: dict | None = None  # which Ray worker made it: {"id": "w1", "node": "10.0.0.5", "pid": 4242}

    def as_json(self) -> dict:
        seed = self.recipe["settings"]["seed"] if self.recipe else self.job.seed
        data = {"status": self.status, "input": str(self.job.input), "path": str(self.job.output), "seed": seed}
        if self.recipe:
            out, settings = self.recipe["output"], self.recipe["settings"]
            data.update(
                frames=out["frames"],
                fps=out["fps"],
                width=out["width"],
                height=out["height"],
                model=self.recipe["model"]["name"],
                steps=settings["steps"],
            )
            if "runtime" in self.recipe:
                data["memory"] = self.recipe["runtime"]["memory"]["profile"]
        data["seconds"] = round(self.seconds, 2)
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
    from .models.sources import peek_defaults

    req = session.request
    check_template(req.name or "{stem}")
    defaults = peek_defaults(req.model)
    if defaults is None:
        session.resolve()
        defaults = session.defaults
    return plan_jobs(req, defaults, stdin)


def plan_jobs(req: Request, defaults: dict | None, stdin: Iterable[str] | None = None) -> Plan:
    """Expand inputs, pick seeds and name every output; raise UsageError before any work on a bad plan.

    `defaults` are the model's (for names that use {fps} or {frames}); None if they are not known yet.
    """
    from .io.images import image_extensions

    image_exts = image_extensions()
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
            walker = path.rglob("*") if req.recursive else path.glob("*")
            for p in walker:
                if not p.is_file() or _hidden(p.relative_to(path)):
                    continue
                if p.suffix.lower() in image_exts:
                    found.setdefault(p, path)
                else:
                    non_images += 1
        elif path.exists():
            _add_file(found, path)
        elif GLOB_CHARS & set(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            files = [m for m in matches if m.is_file()]
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
    rng = random.SystemRandom()
    if req.seeds:
        return [(s, True) for s in req.seeds]
    if req.variations:
        if req.seed is not None:
            return [(req.seed + i, True) for i in range(req.variations)]
        return [(rng.randrange(2**31), False) for _ in range(req.variations)]
    if req.seed is not None:
        return [(req.seed, True)]
    return [(rng.randrange(2**31), False)]


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
            fields = {
                "stem": job.input.stem,
                "seed": job.seed,
                "index": job.index,
                "model": Path(req.model).name,
                "fps": "" if values.get("fps") is None else values["fps"],
                "frames": "" if values.get("frames") is None else values["frames"],
            }
            name = template.format(**fields) + suffix
            folder = (out / job.rel_dir) if out is not None else job.input.parent
            job.output = folder / name
        key = Path(os.path.normcase(os.path.abspath(job.output)))
        if key in seen:
            other = seen[key]
            raise UsageError(
                f"{ref('name')} {template!r}: {other.input} and {job.input} would both be written to {job.output}; "
                f"add {{seed}} or {{index}} to {ref('name')}, or use separate {ref('out')} folders.",
                option="name",
            )
        seen[key] = job


# --- 2. running ------------------------------------------------------------------------------------------


def expected_recipe(session: Session, job: Job, fmt: str, sha256: Callable[[Path], str]) -> dict | None:
    """The recipe this run would write for `job` (for the resume check), without loading the model."""
    from .io.images import upright_size
    from .stages.first_frame import target_size

    image_size = upright_size(job.input)
    if image_size is None:
        return None
    size = target_size(session.request.size, session.defaults["size"], image_size)
    return _recipe(session, job, fmt, sha256(job.input), session.settings_for(job.seed, size))


def _recipe(session: Session, job: Job, fmt: str, sha256: str, settings, clip=None, seconds=None) -> dict:
    req = session.request
    return build_recipe(
        input_path=job.input,
        input_sha256=sha256,
        output=job.output,
        fmt=fmt,
        settings=settings,
        fps=clip.fps if clip is not None else settings.fps,
        seed_fixed=job.seed_fixed,
        fit=req.fit,
        background=req.background,
        model=session.source.describe(),
        stages=clip.stages + [{"stage": "write", "format": fmt, "fps": clip.fps}] if clip is not None else None,
        runtime=session.runtime() if clip is not None else None,
        seconds=seconds,
    )


def make_video(session: Session, job: Job, fmt: str, sha256: Callable[[Path], str]) -> JobResult:
    """One job through every stage: first frame, animate, write (video and recipe, atomically)."""
    from .io.video import check_writable, remove_stale_partials, write_video_and_recipe

    started = time.monotonic()
    frame = session.first_frame_from_file(job.input)
    check_writable(job.output.parent)
    remove_stale_partials(job.output, fmt)
    clip = session.animate(frame, job.seed)
    settings = session.settings_for(job.seed, frame.picture.size)
    recipe = _recipe(session, job, fmt, sha256(job.input), settings, clip, time.monotonic() - started)
    session.progress.start("write")
    write_video_and_recipe(clip.frames, job.output, clip.fps, fmt, recipe)
    session.progress.end()
    return JobResult(job, "ok", seconds=time.monotonic() - started, recipe=recipe)


def _naming(job: Job, reason: str) -> str:
    """Every failure line names its input."""
    return reason if str(job.input) in reason else f"{job.input}: {reason}"


class FileHashes:
    """SHA-256 of input files, each read once per process (several seeds of one photo share it)."""

    def __init__(self) -> None:
        self._known: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path not in self._known:
            self._known[path] = file_sha256(path)
        return self._known[path]


def run_one(session: Session, job: Job, sha256: Callable[[Path], str], reraise_unexpected: bool = False) -> JobResult:
    """Make one video and say how it went. The same in every executor (this process, or a Ray worker).

    A failure that belongs to this input (a broken image, a failed write, out of memory even on `min`) is a
    failed result; one that dooms every job (the model cannot be loaded, a bad request) is raised.
    """
    try:
        return make_video(session, job, session.request.format, sha256)
    except (UsageError, ModelLoadError, ModelUnavailableError):
        raise
    except SvdError as exc:
        return JobResult(job, "failed", reason=_naming(job, exc.marked()))
    except Exception as exc:
        if reraise_unexpected:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"unexpected error ({type(exc).__name__}: {first})"
        return JobResult(job, "failed", reason=_naming(job, reason), unexpected=True)


def decide_jobs(
    session: Session, plan: Plan, summary: Summary, on_result: Callable[[JobResult], None], sha256: Callable
) -> list[Job]:
    """The resume decisions, made once by the driver: report finished outputs as skipped, return the rest."""
    req = session.request
    summary.non_images = plan.non_images
    if session.source is None:
        session.resolve()
    todo: list[Job] = []
    for job in plan.jobs:
        if req.overwrite or not job.output.exists():  # nothing to compare: no need to read (hash) the photo
            todo.append(job)
            continue
        expected = expected_recipe(session, job, req.format, sha256)
        state, why, earlier = resume_state(job.output, req.format, expected, job.seed_fixed)
        if state == "todo":
            todo.append(job)
        else:
            result = JobResult(job, "skipped", reason=why, recipe=earlier)
            summary.results.append(result)
            on_result(result)
    return todo


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
    ) -> None:
        progress = session.progress
        for job in todo:
            progress.note(f"[{job.index + 1}/{total}] {job.input} -> {job.output} (seed {job.seed})")
            result = run_one(session, job, sha256, reraise_unexpected)
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
    on_result = on_result or (lambda r: None)
    sha256 = FileHashes()
    todo = decide_jobs(session, plan, summary, on_result, sha256)
    if todo:
        (executor or LocalExecutor()).run(
            session, todo, total=len(plan.jobs), summary=summary, on_result=on_result, sha256=sha256,
            reraise_unexpected=reraise_unexpected,
        )  # fmt: skip
    return summary
