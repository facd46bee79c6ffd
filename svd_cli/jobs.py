"""From the inputs a user named to the list of videos to make, before any work starts.

`list_jobs` expands files, folders, globs and stdin (or prompts: `prompt`, a `prompts` file, stdin) into a sorted
list of jobs, draws each one's seed, names every output and refuses templates that escape the output folder or
collide. batch.py runs the jobs.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError, ref
from .io.bounded import LIST_LIMIT, BoundedReadError, load_json, read_text, stdin_lines
from .io.latents import KeptLatents
from .io.safety import OwnOutputs, check_outputs, recipe_for
from .io.video import STYLED_MARK, output_suffix
from .kinds import VIDEO
from .models.sources import check_kind, peek_defaults, peek_family
from .options import (
    MAX_VARIATIONS,
    RANDOM_SEEDS,
    Request,
    check_family_settings,
    check_template,
    fill_template,
    random_seed,
    with_defaults,
)
from .session import Session
from .stages.loop import check_loop

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
    finish: KeptLatents | None = None  # a draft's kept latents, decoded instead of denoising (svd finish)
    keyframes: list[Path] = field(default_factory=list)  # the pictures after `input` a keyframes video passes through

    @property
    def label(self) -> str:
        """How messages name the job: its input file, or its prompt."""
        if self.input is not None:
            return str(self.input)
        short = self.prompt if len(self.prompt) <= 60 else self.prompt[:57] + "..."
        return f"prompt {short!r}"


@dataclass
class JobList:
    """Every video a run makes, in order, named and seeded before any model is loaded."""

    jobs: list[Job]
    non_images: int = 0  # files in scanned folders that are not images (skipped, counted)


def jobs_for_request(session: Session, stdin: Iterable[str] | None = None) -> JobList:
    """Every job of a run, with every usage error raised before any download or model load.

    Output names may use the model's defaults ({fps}, {frames}); they are known without the network for
    named models and folders. Only a Hub repo that is not downloaded yet is resolved (fetched) first.
    """

    req = session.request
    check_template(req.name or "{stem}")
    check_kind(req.model, VIDEO)
    if (family := peek_family(req.model)) is not None:
        check_family_settings(req, family, req.model)
    defaults = peek_defaults(req.model, VIDEO)
    if session.uses_image_model:
        check_kind(req.image_model, "text-to-image")
        _check_style_steps(req, peek_defaults(req.image_model, "text-to-image"))
    if defaults is None:
        session.resolve()
        defaults = session.defaults
    frames = req.frames or defaults["frames"]
    check_loop(req.loop, frames + req.extend * (frames - 1), req.loop_frames)
    return list_jobs(req, defaults, stdin)


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


def list_jobs(req: Request, defaults: dict | None, stdin: Iterable[str] | None = None) -> JobList:
    """Expand inputs, pick seeds and name every output; raise UsageError before any work on a bad plan.

    `defaults` are the model's (for names that use {fps} or {frames}); None if they are not known yet.
    """
    prompts = read_prompts(req, stdin)
    if prompts is not None:
        jobs = [
            Job(index=i, input=None, rel_dir=Path(), seed=seed, seed_fixed=fixed, prompt=text)
            for i, (text, (seed, fixed)) in enumerate((t, s) for t in prompts for s in _seeds(req, t))
        ]
        name_outputs(jobs, req, defaults or {})
        return JobList(jobs=jobs)

    found, non_images = _find_inputs(req, stdin)
    found = _without_masks(found, req.masks)
    if not found:
        raise UsageError(f"No input images found (folders are scanned for image files; {ref('recursive')} descends).")

    if req.keyframes:
        return _keyframe_jobs(req, defaults, list(found), non_images)
    jobs: list[Job] = []
    for path in sorted(found, key=lambda p: str(p)):
        base = found[path]
        rel_dir = path.parent.relative_to(base) if base != path.parent else Path()
        for seed, fixed in _seeds(req, path.name):
            jobs.append(Job(index=len(jobs), input=path, rel_dir=rel_dir, seed=seed, seed_fixed=fixed))
    name_outputs(jobs, req, defaults or {})
    return JobList(jobs=jobs, non_images=non_images)


def _find_inputs(req: Request, stdin: Iterable[str] | None) -> tuple[dict[Path, Path], int]:
    """Every input picture the arguments name (files, folders, globs, stdin's lines), each with the folder it was
    found under (for mirroring), in the order found; and how many files of scanned folders were not pictures."""
    from .io.images import image_extensions

    image_exts = image_extensions()
    own_outputs = OwnOutputs()  # a rerun must not animate the videos and frames of the last run
    found: dict[Path, Path] = {}  # input -> folder it was found under (for mirroring)
    non_images = 0
    for arg in req.inputs:
        if arg == "-":
            try:
                lines = stdin_lines(stdin)
            except BoundedReadError as exc:
                raise UsageError(f"stdin: {exc}; give one picture's path a line.") from None
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
    return found, non_images


def _keyframe_jobs(req: Request, defaults: dict | None, pictures: list[Path], non_images: int) -> JobList:
    """One video through every picture, in the order found (arguments as given, a folder's in name order), for
    each seed asked for."""
    if len(pictures) < 2:
        raise UsageError(f"{ref('keyframes')} makes one video through several pictures: give two or more (found "
                         f"{len(pictures)}).", option="keyframes")  # fmt: skip
    jobs = [Job(index=i, input=pictures[0], rel_dir=Path(), seed=seed, seed_fixed=fixed, keyframes=pictures[1:])
            for i, (seed, fixed) in enumerate(_seeds(req, pictures[0].name))]  # fmt: skip
    name_outputs(jobs, req, defaults or {})
    return JobList(jobs=jobs, non_images=non_images)


def _without_masks(found: dict[Path, Path], masks: Path | None) -> dict[Path, Path]:
    """The inputs found, less the pictures in the masks folder (masks are never photos, wherever they are)."""
    if masks is None:
        return found
    folder = masks.resolve()
    return {path: base for path, base in found.items() if folder not in path.resolve().parents}


def _scan_folder(folder: Path, recursive: bool, image_exts, own_outputs, found: dict[Path, Path]) -> int:
    """Add the photos in `folder` to `found` (each under `folder`, for mirroring); return how many files were not
    images. Hidden files, svd's own outputs and the stills it saved are not inputs."""
    non_images = 0
    for p in sorted(folder.rglob("*") if recursive else folder.glob("*")):  # name order (keyframes' order)
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
    where = "stdin" if str(req.prompts) == "-" else str(req.prompts)
    try:
        if where == "stdin":
            lines = stdin_lines(stdin)
        else:
            lines = read_text(Path(req.prompts).expanduser(), LIST_LIMIT).splitlines()
    except FileNotFoundError:
        raise UsageError(f"{ref('prompts')} {req.prompts}: no such file.", option="prompts") from None
    except BoundedReadError as exc:
        raise UsageError(f"{ref('prompts')} {where}: {exc}.", option="prompts") from None
    except OSError as exc:
        raise UsageError(f"{ref('prompts')} {where}: cannot be read ({exc.strerror}).", option="prompts") from None
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

    stem = path.stem[: -len(STYLED_MARK)] if path.stem.endswith(STYLED_MARK) else path.stem
    for tail in (".mp4.json", ".gif.json", ".webm.json", ".frames.json", ".json"):  # every format's sidecar
        sidecar = path.with_name(stem + tail)
        if not sidecar.is_file():
            continue
        try:
            still = load_json(read_text(sidecar)).get("output", {}).get("still")
        except (OSError, ValueError, AttributeError, BoundedReadError):
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


def _seeds(req: Request, source: str) -> list[tuple[int, bool]]:
    """(seed, fixed?) per video of one image (or prompt), named by `source` (the file's name, the prompt's text).
    Random seeds are drawn now (a new one for every video), so names that include {seed} are known before any
    work starts. Variations take consecutive seeds from `seed`, or from a seed derived from `source`: the same
    command makes the same set, so running it again finishes an interrupted set instead of adding to it, and
    a larger N adds only the variations past the last run's."""
    if req.seeds:
        return [(s, True) for s in req.seeds]
    if req.variations:
        first = req.seed if req.seed is not None else variation_seed(source)
        return [(first + i, True) for i in range(req.variations)]
    if req.seed is not None:
        return [(req.seed, True)]
    return [(random_seed(), False)]


def variation_seed(source: str) -> int:
    """The first seed of the variations of `source`: below RANDOM_SEEDS like a drawn seed, the same every run."""
    import hashlib

    digest = hashlib.sha256(f"svd variations\0{source}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (RANDOM_SEEDS - MAX_VARIATIONS)


def name_outputs(jobs: list[Job], req: Request, defaults: dict) -> None:
    """Set each job's output path from the output and name settings; refuse escapes and collisions."""
    fmt = req.format
    suffix = output_suffix(fmt)
    several_per_image = bool(req.seeds and len(req.seeds) > 1) or bool(req.variations and req.variations > 1)
    template = req.name or ("{stem}-{seed}" if several_per_image else "{stem}")
    check_template(template)
    values = with_defaults(req, defaults) if defaults else {"fps": req.fps, "frames": req.frames}

    out = req.out
    # A frames folder svd made earlier is that one output again (a rerun, a finish), not a folder to put one in.
    own_frames = (
        fmt == "frames" and out is not None and out.name not in ("", "..") and not req.out_is_folder and out.is_dir()
        and recipe_for(out, fmt) is not None
    )  # fmt: skip
    single_file = (
        out is not None
        and len(jobs) == 1
        and req.name is None
        and not req.out_is_folder
        and (own_frames or (not out.is_dir() and (out.suffix.lower() == suffix if suffix else not out.exists())))
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
