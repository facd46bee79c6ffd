"""`svd plan`: every memory profile and diffusers' own recipes, simulated on fake tensors (no GPU, no weights)."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Annotated, Any

import typer

from ..errors import OptionError
from ..options import OPTIONS, Request, samples_both_ends
from ..planning.plan import plan_report
from ..planning.simulate import CUDA_CONTEXT_BYTES
from .common import Debug, JsonOut, schema_parameter, spell, words
from .terminal import PlainProgress, out_console

PIPED_WIDTH = 80


# `svd animate`'s options that are about files, a batch or the terminal: they cost no device time.
NOT_PLANNED = {"prompts", "seeds", "variations", "out", "name", "format", "recursive", "overwrite", "json", "quiet",
               "allow_download", "ray", "ray_address", "workers", "preview", "keep_preview",
               "keep_latents"}  # fmt: skip
PLANNED = [o for o in OPTIONS if o.name not in NOT_PLANNED]
# The largest --vram taken: no card has more memory (the largest in 2026 have under 300 GB).
MAX_VRAM_GB = 1024


def plan(ctx: typer.Context, **params: Any) -> None:
    """Simulate every memory profile and diffusers' recipes: peak VRAM, FLOPs, GPU time floors. No GPU, no weights.

    Takes `svd animate`'s options, with the same names and defaults; with --extend, --loop and --upscale the
    numbers are the whole video's, and --memory PROFILE simulates that profile alone."""

    vram = params.pop("vram")
    json_out = params.pop("json_out")
    params.pop("debug")
    req = Request(**params)  # coerced and checked like svd animate's
    if vram is not None and not 0 < vram <= MAX_VRAM_GB:  # also refuses nan, which no comparison holds for
        raise OptionError(
            "vram",
            vram,
            f"give the card's memory in GB, more than 0 and at most {MAX_VRAM_GB}, e.g. 8.",
            allowed=(0, MAX_VRAM_GB),
        )
    free = int(vram * 2**30) - CUDA_CONTEXT_BYTES if vram is not None else _free_cuda_memory()
    progress = PlainProgress(words)  # stderr: an uncached row takes seconds
    report = plan_report(
        req.model, frames=req.frames, size=req.size, dtype="fp16" if req.dtype == "auto" else req.dtype,
        steps=req.steps, free_bytes=free, progress=progress, max_cfg=req.max_cfg, extend=req.extend,
        loop=req.loop, loop_frames=req.loop_frames, upscale=req.upscale, upscaler=req.upscaler,
        interpolate=req.interpolate, cache=req.cache, decoder=req.decoder, weights=req.weights,
        end=samples_both_ends(req), mask=req.mask is not None or req.masks is not None, memory=req.memory,
    )  # fmt: skip
    if req.prompt is not None or req.style is not None:  # the image model runs before SVD, alone on the device
        progress.note(
            f"The image model that {spell('prompt')} and {spell('style')} use is not simulated: the numbers are "
            "the video's (the two models are never on the device together)."
        )
    if json_out:
        print(json.dumps(report.as_json(), indent=2))
        return
    from rich.table import Table

    headers, rows, notes = report.table()
    piped = not sys.stdout.isatty()
    if piped:  # savers are listed under the table, so the numbers fit in 80 columns
        savers = [f"{row[0]}: {row[-1]}" for row in rows]
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    table = Table(title=f"svd plan: {req.model}", box=None, pad_edge=False)
    for header in headers:
        left = header in ("row", "savers")
        table.add_column(header, justify="left" if left else "right", no_wrap=header != "savers")
    for row in rows:
        table.add_row(*row)
    lines = [table, *(["savers:", *savers] if piped else []), *(words(note) for note in notes)]
    if report.free_bytes is None and req.memory == "auto":
        lines.append("No CUDA GPU here: pass --vram GB to see what --memory auto would pick.")
    _print(lines, piped)


def _signature() -> inspect.Signature:
    vram = typer.Option(
        "--vram", help="A card's memory in GB, for auto's pick [default: this GPU's free memory].", show_default=False
    )
    kw = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature(
        [
            inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
            *(schema_parameter(o) for o in PLANNED),
            inspect.Parameter("vram", kw, default=None, annotation=Annotated[float | None, vram]),
            inspect.Parameter("json_out", kw, default=False, annotation=JsonOut),
            inspect.Parameter("debug", kw, default=False, annotation=Debug),
        ]
    )


plan.__signature__ = _signature()


def _print(renderables: list, piped: bool) -> None:
    """On a terminal, at its width; piped, plain text wrapped at 80 columns with no trailing padding."""
    from rich.console import Console

    if not piped:
        console = out_console()
        for item in renderables:
            console.print(item, markup=False)
        return
    plain = Console(width=PIPED_WIDTH, no_color=True, highlight=False, force_terminal=False)
    with plain.capture() as captured:
        for item in renderables:
            plain.print(item, markup=False)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _free_cuda_memory() -> int | None:
    import torch

    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None


def register(app: typer.Typer) -> None:
    app.command()(plan)
