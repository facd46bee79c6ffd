"""Batches: from the inputs a user named to videos on disk, one model load for all of them.

1. `plan_jobs` expands files, folders, globs and stdin into a sorted list of jobs, names every output and
   refuses templates that escape the output folder or collide, before any work starts.
2. `run_jobs` skips outputs that are already done with the same recipe (resume), loads the model once,
   animates each remaining job, writes the video and its recipe sidecar atomically, and reports each
   result as it happens. One bad input fails that job only; the batch goes on.
"""

from __future__ import annotations

import glob
import os
import random
import string
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelLoadError, ModelUnavailableError, SvdError, UsageError
from .progress import NullProgress, Progress
from .recipe import build_recipe, file_sha256, resume_state
from .settings import AnimateRequest
from .video import output_suffix

TEMPLATE_FIELDS = ("stem", "seed", "index", "model", "fps", "frames")
GLOB_CHARS = set("*?[")


@dataclass
class Job:
    """One video to make: which image, where it goes, with which seed."""

    index: int
    input: Path
    rel_dir: Path  # folder of the input relative to the folder it was found under (mirrored under --out)
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
        }


# --- 1. planning -----------------------------------------------------------------------------------------


def plan_jobs(req: AnimateRequest, stdin: Iterable[str] | None = None) -> Plan:
    """Expand inputs, pick seeds and name every output; raise UsageError before any work on a bad plan."""
    from .images import image_extensions

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
        raise UsageError("No input images found (folders are scanned for image files; --recursive descends).")

    jobs: list[Job] = []
    for path in sorted(found, key=lambda p: str(p)):
        base = found[path]
        rel_dir = path.parent.relative_to(base) if base != path.parent else Path()
        for seed, fixed in _seeds(req):
            jobs.append(Job(index=len(jobs), input=path, rel_dir=rel_dir, seed=seed, seed_fixed=fixed))
    name_outputs(jobs, req)
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


def _seeds(req: AnimateRequest) -> list[tuple[int, bool]]:
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


def name_outputs(jobs: list[Job], req: AnimateRequest) -> None:
    """Set each job's output path from --out and --name; refuse escapes and collisions."""
    fmt = req.format
    suffix = output_suffix(fmt)
    several_per_image = bool(req.seeds and len(req.seeds) > 1) or bool(req.variations and req.variations > 1)
    template = req.name or ("{stem}-{seed}" if several_per_image else "{stem}")
    _check_template(template)

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
        raise UsageError(
            f"--out {out}: names one file but this run makes {len(jobs)} videos; give a folder instead."
            if len(jobs) > 1
            else f"--out {out}: the suffix does not match --format {fmt}; use {out.with_suffix(suffix or '')}."
        )
    seen: dict[Path, Job] = {}
    for job in jobs:
        if single_file:
            job.output = out
        else:
            name = _render(template, job, req) + suffix
            folder = (out / job.rel_dir) if out is not None else job.input.parent
            job.output = folder / name
        key = Path(os.path.normcase(os.path.abspath(job.output)))
        if key in seen:
            other = seen[key]
            raise UsageError(
                f"--name {template!r}: {other.input} and {job.input} would both be written to {job.output}; "
                "add {seed} or {index} to --name, or use separate --out folders."
            )
        seen[key] = job


def _check_template(template: str) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise UsageError(f"--name {template!r}: not a valid template ({exc}).") from None
    unknown = [n for n in names if n not in TEMPLATE_FIELDS]
    if unknown:
        raise UsageError(
            f"--name {template!r}: unknown field {{{unknown[0]}}}; use "
            + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            + "."
        )
    if "/" in template or "\\" in template or template.strip() in ("", ".", "..") or ".." in template:
        raise UsageError(
            f"--name {template!r}: a name may not contain path separators or '..' (it would escape the output "
            "folder); use --out to choose the folder."
        )


def _render(template: str, job: Job, req: AnimateRequest) -> str:
    values = {
        "stem": job.input.stem,
        "seed": job.seed,
        "index": job.index,
        "model": Path(req.model).name,
        "fps": req.fps if req.fps is not None else "",
        "frames": req.frames if req.frames is not None else "",
    }
    return template.format(**values)


# --- 2. running ------------------------------------------------------------------------------------------


class JobRunner:
    """Animates jobs with one loaded model; builds each job's recipe and writes its outputs."""

    def __init__(self, req: AnimateRequest, progress: Progress | None = None):
        self.req = req
        self.progress = progress or NullProgress()
        self.source = None
        self.animator = None
        self.defaults = None
        self._sha: dict[Path, str] = {}

    def input_sha256(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = file_sha256(path)
        return self._sha[path]

    # The model is resolved first (cheap, may download) and loaded only if some job needs it.
    def resolve(self) -> None:
        from .hub import resolve_model
        from .settings import model_defaults, read_unet_config

        self.source = resolve_model(self.req.model, progress=self.progress)
        self.defaults = model_defaults(self.source, read_unet_config(self.source.path))
        d = self.defaults
        asked = (self.req.fps or d.fps, d.motion_bucket if self.req.motion_bucket is None else self.req.motion_bucket)
        if d.fixed_conditioning and asked != (d.fps, d.motion_bucket):
            self.progress.note(
                f"{self.source.name} was fine-tuned at fps {d.fps} and motion bucket {d.motion_bucket}; "
                "other values may give worse motion"
            )

    def load(self) -> None:
        from .loading import load_model, resolve_device, resolve_dtype
        from .memory import choose_plan
        from .pipeline import Animator

        req = self.req
        device = resolve_device(req.device)
        dtype = resolve_dtype(req.dtype, device)
        if device.type == "cpu" and req.dtype == "fp16":
            self.progress.note("fp16 on the CPU is much slower than fp32 (--dtype auto); it is meant for GPUs")
        self.progress.start("load")
        model = load_model(self.source, device, dtype)
        self.progress.end()
        overrides = {
            "decode_chunk": req.decode_chunk,
            "vae_tiling": req.vae_tiling,
            "attention": req.attention if req.attention != "auto" else None,
        }
        plan = choose_plan(model, req.memory, overrides, self.first_shape)
        self.progress.note(f"Memory profile {plan.profile}: {plan.reason}" + _savers_text(plan))
        self.animator = Animator(model, plan)

    def settings_for(self, job: Job, size: tuple[int, int]):
        from .pipeline import GenerationSettings

        req, d = self.req, self.defaults
        return GenerationSettings(
            frames=req.frames or d.frames,
            fps=req.fps or d.fps,
            motion_bucket=req.motion_bucket if req.motion_bucket is not None else d.motion_bucket,
            noise_aug=req.noise_aug,
            steps=req.steps or d.steps,
            min_cfg=req.min_cfg,
            max_cfg=req.max_cfg,
            seed=job.seed,
            width=size[0],
            height=size[1],
        )

    def recipe(self, job: Job, settings, runtime: dict | None = None, seconds: float | None = None) -> dict:
        req = self.req
        return build_recipe(
            input_path=job.input,
            input_sha256=self.input_sha256(job.input),
            output=job.output,
            fmt=req.format,
            settings=settings,
            seed_fixed=job.seed_fixed,
            fit=req.fit,
            background=req.background,
            model=self.source.describe(),
            runtime=runtime,
            seconds=seconds,
        )

    def runtime(self) -> dict:
        """Where and how this run computes: recorded so a recipe can be repeated exactly."""
        import diffusers
        import torch

        from .loading import dtype_name

        model, plan = self.animator.model, self.animator.plan
        return {
            "device": str(model.device),
            "dtype": dtype_name(model.dtype),
            "memory": plan.describe() | {"attention_kernel": self.animator.placement.attention},
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        }

    def size_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """--size, else the model's default size, turned upright for portrait photos."""
        from .images import is_portrait
        from .settings import DEFAULT_SIZE

        if self.req.size:
            return self.req.size
        size = self.defaults.size if self.defaults else DEFAULT_SIZE
        return size[::-1] if is_portrait(image_size) else size

    first_shape: tuple[int, int, int] = (25, 1024, 576)

    def run_one(self, job: Job) -> JobResult:
        from .images import fit_image, open_image, parse_color
        from .video import check_writable, remove_stale_partials, write_video_and_recipe

        req = self.req
        started = time.monotonic()
        background = parse_color(req.background)
        image, notes = open_image(job.input, background)
        check_writable(job.output.parent)
        remove_stale_partials(job.output, req.format)
        for note in notes:
            self.progress.note(note)
        size = self.size_for(image.size)
        settings = self.settings_for(job, size)
        picture = fit_image(image, size[0], size[1], req.fit, background)
        if self.animator is None:
            self.first_shape = (settings.frames, settings.width, settings.height)
            self.load()
        frames = self.animator.animate(picture, settings, self.progress)
        recipe = self.recipe(job, settings, self.runtime(), time.monotonic() - started)
        self.progress.start("write")
        write_video_and_recipe(frames, job.output, settings.fps, req.format, recipe)
        self.progress.end()
        return JobResult(job, "ok", seconds=time.monotonic() - started, recipe=recipe)

    def expected_recipe(self, job: Job) -> dict | None:
        """The recipe this run would write for `job` (for the resume check), without loading the model."""
        from .images import upright_size

        image_size = upright_size(job.input)
        if image_size is None:
            return None
        return self.recipe(job, self.settings_for(job, self.size_for(image_size)))


def _naming(job: Job, reason: str) -> str:
    """Every failure line names its input."""
    return reason if str(job.input) in reason else f"{job.input}: {reason}"


def _savers_text(plan) -> str:
    savers = plan.savers()
    return f" [{', '.join(savers)}]" if savers else " [no savers]"


def run_jobs(
    req: AnimateRequest,
    plan: Plan,
    summary: Summary,
    progress: Progress | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    debug: bool = False,
) -> Summary:
    """Animate every job of `plan` into `summary` (so a Ctrl-C still leaves the results so far).

    A failure that belongs to one input (a broken image, a failed write, out of memory even on `min`) fails
    that job and the batch goes on; one that dooms every job (the model cannot be loaded) ends the run.
    """
    progress = progress or NullProgress()
    on_result = on_result or (lambda r: None)
    summary.non_images = plan.non_images
    runner = JobRunner(req, progress)
    runner.resolve()

    todo: list[Job] = []
    for job in plan.jobs:
        if req.overwrite:
            todo.append(job)
            continue
        state, why, earlier = resume_state(job.output, req.format, runner.expected_recipe(job), job.seed_fixed)
        if state == "todo":
            todo.append(job)
        else:
            result = JobResult(job, "skipped", reason=why, recipe=earlier)
            summary.results.append(result)
            on_result(result)

    for job in todo:
        progress.note(f"[{job.index + 1}/{len(plan.jobs)}] {job.input} -> {job.output} (seed {job.seed})")
        try:
            result = runner.run_one(job)
        except (UsageError, ModelLoadError, ModelUnavailableError):
            raise
        except SvdError as exc:
            result = JobResult(job, "failed", reason=_naming(job, str(exc)))
        except Exception as exc:
            if debug:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"unexpected error ({type(exc).__name__}: {first}); run with --debug for the traceback"
            result = JobResult(job, "failed", reason=_naming(job, reason))
        progress.end()
        summary.results.append(result)
        on_result(result)
    return summary
