"""`svd finish`: drafts made final. A draft (draft, or keep_latents) kept its final denoised latents beside it;
finishing decodes them with the model's full decoder, runs the post stages its recipe asks for and replaces the
draft with the final video (and its recipe), as a run without the draft would have made it: the denoising is
not done again.

Each draft is replayed from its own recipe (io/recipe.py) with the decoder set to full and no latents kept,
through the same batch path as `svd animate` (claims, atomic writes, one line per failure), its job carrying the
kept latents (io/latents.py) to decode in place of denoising. Drafts of one model share one model load.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .batch import JobResult, Summary, run_jobs
from .errors import SvdError, UsageError, ref
from .io.latents import KeptLatents, check_latents, latents_path, work_key
from .io.safety import recipe_for, sidecar_path
from .jobs import GLOB_CHARS, Job, jobs_for_request
from .model_cache import ModelCache
from .options import FORMATS, assemble_request
from .progress import NullProgress, Progress
from .session import Session

# What a finish changes in a draft's recipe: the model's own decoder, and no latents kept any more.
FINAL = {"decoder": "full", "keep_latents": False, "draft": False}


@dataclass
class Draft:
    """A video svd made, found among the paths given to finish, with its format and recipe (None: not svd's)."""

    video: Path
    fmt: str
    recipe: dict | None


def find_drafts(paths: Iterable[str], recursive: bool = False) -> list[Draft]:
    """The videos the paths name: files, frames folders, folders of them (sub-folders with `recursive`), globs."""
    found: dict[Path, Draft] = {}
    for arg in paths:
        path = Path(arg).expanduser()
        if path.exists():
            candidates = [path] if _video_format(path) else _scan(path, recursive) if path.is_dir() else [path]
        elif GLOB_CHARS & set(arg):
            candidates = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            if not candidates:
                raise UsageError(f"{arg}: no file matches this pattern.")
        else:
            raise UsageError(f"{arg}: no such file or folder.")
        for candidate in candidates:
            fmt = _video_format(candidate)
            if candidate not in found:
                found[candidate] = Draft(candidate, fmt or "", recipe_for(candidate, fmt) if fmt else None)
    if not found:
        raise UsageError(f"No drafts found (folders are scanned for svd's drafts; {ref('recursive')} descends).")
    return list(found.values())


def finish_drafts(
    drafts: list[Draft],
    summary: Summary,
    on_result: Callable[[JobResult], None] | None = None,
    progress: Progress | None = None,
    overrides: dict | None = None,
    reraise_unexpected: bool = False,
) -> Summary:
    """Finish every draft into `summary` (each result also to `on_result`); `overrides` are settings the command
    gives for every draft (memory, device), over its recipe's."""
    on_result = on_result or (lambda result: None)
    progress = progress or NullProgress()
    models, models_key = None, None
    for index, draft in enumerate(drafts):
        job = Job(index=index, input=None, rel_dir=Path(), seed=0, seed_fixed=True, output=draft.video)
        try:
            kept = _kept_latents(draft)
        except SvdError as exc:
            _report(summary, on_result, JobResult(job, "skipped" if exc.fields.get("finished") else "failed",
                                                  reason=exc.marked()))  # fmt: skip
            continue
        progress.note(f"[{index + 1}/{len(drafts)}] finishing {draft.video}")
        try:  # the draft's recipe replayed, with the final decoder, onto the draft's own output
            explicit = FINAL | (overrides or {}) | {"out": str(draft.video), "format": draft.fmt, "overwrite": True}
            request = assemble_request([], explicit=explicit, recipe=draft.recipe,
                                       recipe_path=sidecar_path(draft.video, draft.fmt))  # fmt: skip
            # One model load for the drafts of one model (and the same device, precision and memory choice).
            key = json.dumps([draft.recipe.get("model"), request.device, request.dtype, request.memory],
                             sort_keys=True, default=str)  # fmt: skip
            if key != models_key:
                models, models_key = ModelCache(progress), key
            session = Session(request, progress, models)
            session.resolve()
            job_list = jobs_for_request(session)
        except SvdError as exc:
            _report(summary, on_result, JobResult(job, "failed", reason=f"{draft.video}: {exc.marked()}"))
            continue
        job_list.jobs[0].finish = kept
        run_jobs(session, job_list, summary, on_result, reraise_unexpected=reraise_unexpected)
    return summary


def _kept_latents(draft: Draft) -> KeptLatents:
    """The draft's kept latents, checked against its recipe; an SvdError (with `finished` when it is done) if
    it cannot be finished."""
    if not draft.fmt:
        raise SvdError(
            f"{draft.video}: not a video svd makes ({', '.join(FORMATS)}); name svd's drafts or their folders."
        )
    if draft.recipe is None:
        raise SvdError(f"{draft.video}: svd did not make it (no recipe beside it), so it is no draft to finish.")
    settings = draft.recipe.get("settings") or {}
    path = latents_path(draft.video, draft.fmt)
    if not settings.get("keep_latents"):
        finished = any(stage.get("from_kept_latents") for stage in draft.recipe.get("stages") or [])
        if finished:
            raise SvdError("already finished (decoded from its kept latents)", finished=True)
        raise SvdError(
            f"{draft.video}: not a draft (made without {ref('draft')} or {ref('keep_latents')}), so there are no "
            "latents to finish it from."
        )
    kept = KeptLatents(path, work_key(draft.recipe))
    check_latents(kept.path, kept.key, draft.video)
    return kept


def _report(summary: Summary, on_result: Callable[[JobResult], None], result: JobResult) -> None:
    summary.results.append(result)
    on_result(result)


def _video_format(path: Path) -> str | None:
    """The format of a video svd may have made at `path` (a frames folder has a sidecar named for it)."""
    if path.is_dir():
        return "frames" if sidecar_path(path, "frames").is_file() else None
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS and suffix != "frames" else None


def _scan(folder: Path, recursive: bool) -> list[Path]:
    """The drafts in `folder`: svd's videos whose recipe says their latents were kept (finished videos, and
    anything else, are passed over)."""
    found = []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        fmt = _video_format(path)
        recipe = recipe_for(path, fmt) if fmt else None
        if recipe is not None and (recipe.get("settings") or {}).get("keep_latents"):
            found.append(path)
    return found
