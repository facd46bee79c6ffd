"""`svd finish`: drafts (made with --draft or --keep-latents) decoded with the model's full decoder, replacing them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import batch
from ..finish import find_drafts, finish_drafts
from ..options import BY_NAME, Request
from .animate import reporter, run_and_summarise
from .common import Debug, Quiet, schema_parameter, words
from .terminal import err_console, make_progress

Videos = Annotated[list[str], typer.Argument(help="Draft videos (files, frames folders), folders of them, or globs.",
                                             show_default=False)]  # fmt: skip
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of folder arguments.")]
JsonLines = Annotated[bool, typer.Option("--json", help="Print one JSON object per video, then a summary, on stdout.")]
Memory = schema_parameter(BY_NAME["memory"]).annotation  # declared as svd animate declares them
Device = schema_parameter(BY_NAME["device"]).annotation


def finish(
    videos: Videos,
    memory: Memory = None,
    device: Device = None,
    recursive: Recursive = False,
    json_lines: JsonLines = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Finish drafts: decode their kept latents with the full decoder, run their post stages, replace each draft.

    The frames equal those of the same `svd animate` run without --draft (the denoising is not redone); the new
    recipe says so. Each draft's own recipe gives the model and settings; --memory and --device override them."""
    overrides = Request(memory=memory, device=device)  # checked like svd animate's
    given = {name: getattr(overrides, name) for name in ("memory", "device") if overrides.given(name) is not None}
    console = err_console()
    progress = make_progress(quiet, words)
    summary = batch.Summary()
    drafts = find_drafts(videos, recursive)
    report = reporter(console, quiet, json_lines, sys.stdout)
    run_and_summarise(
        lambda: finish_drafts(drafts, summary, report, progress, given, reraise_unexpected=debug),
        summary, progress, console, json_lines, quiet,
        "Interrupted: each draft is whole, finished or not; run the same command to go on.",
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(finish)
