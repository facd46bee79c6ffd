"""`svd inpaint`: fill the masked region of an existing video with the video model, keeping every other pixel."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import batch
from ..errors import UsageError, ref
from ..inpaint import inpaint_jobs, make_inpainted
from ..options import BY_NAME, Request, uses_ray
from ..ray_executor import RayExecutor
from ..session import Session
from .animate import origin, reporter, run_and_summarise
from .common import Debug, Quiet, schema_parameter, words
from .terminal import err_console, make_progress

Videos = Annotated[list[Path], typer.Argument(help="The videos to inpaint (one model load for all): MP4, WebM or GIF "
                                              "files, or folders of PNG frames.", show_default=False)]  # fmt: skip
Mask = Annotated[Path, typer.Option("--mask", help="White where the video is made again, black where it is kept: one "
                                    "picture of the video's shape (the same region in every frame), or a video or "
                                    "folder of masks, one per frame.", show_default=False)]  # fmt: skip
Out = Annotated[Path | None, typer.Option("--out", "-o", help="The output file (or frames folder) of a single "
                                          "video [default: NAME.inpainted.mp4 beside each video].",
                                          show_default=False)]  # fmt: skip
JsonLines = Annotated[bool, typer.Option("--json", help="Print one JSON object per video, then a summary, on stdout.")]


def _declared(name: str):
    """The annotation of an animate option, declared as svd animate declares it (same flag, help, variable)."""
    return schema_parameter(BY_NAME[name]).annotation


# The settings inpainting shares with svd animate, by name: each declared once, in the schema.
SHARED = ("model", "steps", "motion_bucket", "noise_aug", "min_cfg", "max_cfg", "seed", "mask_feather", "format",
          "overwrite", "watermark", "credentials", "sign_cert", "sign_key", "sign_tsa", "memory", "device", "dtype",
          "ray", "ray_address", "workers")  # fmt: skip


def inpaint(
    ctx: typer.Context,
    videos: Videos,
    mask: Mask,
    out: Out = None,
    model: _declared("model") = None,
    steps: _declared("steps") = None,
    motion_bucket: _declared("motion_bucket") = None,
    noise_aug: _declared("noise_aug") = None,
    min_cfg: _declared("min_cfg") = None,
    max_cfg: _declared("max_cfg") = None,
    seed: _declared("seed") = None,
    mask_feather: _declared("mask_feather") = BY_NAME["mask_feather"].default,
    format: _declared("format") = BY_NAME["format"].default,
    overwrite: _declared("overwrite") = False,
    watermark: _declared("watermark") = None,
    credentials: _declared("credentials") = None,
    sign_cert: _declared("sign_cert") = None,
    sign_key: _declared("sign_key") = None,
    sign_tsa: _declared("sign_tsa") = None,
    memory: _declared("memory") = BY_NAME["memory"].default,
    device: _declared("device") = BY_NAME["device"].default,
    dtype: _declared("dtype") = BY_NAME["dtype"].default,
    ray: _declared("ray") = False,
    ray_address: _declared("ray_address") = None,
    workers: _declared("workers") = None,
    json_lines: JsonLines = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Fill the masked region of videos: the video model makes it again in every frame, every other pixel stays.

    The first frame's region is filled from the pixels around it, then the model samples the video with the
    input's own frames kept outside the mask at every step (windows of the model's frame count, each starting on
    the frame the one before ended on). Frame count and frame rate are kept; the result is NAME.inpainted.mp4
    beside the video, never the video itself."""
    values = dict(locals())
    request = Request(**{name: values[name] for name in SHARED})  # checked like svd animate's
    console = err_console()
    progress = make_progress(quiet, words)
    session = Session(request, progress)
    summary = batch.Summary()
    report = reporter(console, quiet, json_lines, sys.stdout)

    if out is not None and len(videos) > 1:
        raise UsageError(f"{ref('out')} names one output and this run inpaints {len(videos)} videos: drop it (each "
                         "goes beside its video as NAME.inpainted.mp4).", option="out")  # fmt: skip
    jobs = inpaint_jobs(videos, request, out)
    executor = batch.LocalExecutor()  # one model load for every video
    if uses_ray(request):  # checked before any work, as svd animate does
        executor = RayExecutor(request.ray_address, request.workers, debug=debug,
                               address_origin=origin(ctx, "ray_address"))  # fmt: skip

    def work() -> None:
        session.resolve()
        executor.run(session, jobs, total=len(jobs), summary=summary, on_result=report, sha256=batch.FileHashes(),
                     reraise_unexpected=debug, make=functools.partial(make_inpainted, mask=mask.resolve()))  # fmt: skip

    interrupted = "Interrupted: nothing was left half-written; run the same command to start it again."
    run_and_summarise(work, summary, progress, console, json_lines, quiet, interrupted)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(inpaint)
