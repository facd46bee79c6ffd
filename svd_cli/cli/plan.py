"""`svd plan`: every memory profile and diffusers' own recipes, simulated on fake tensors (no GPU, no weights)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .common import Debug, JsonOut, words

PIPED_WIDTH = 80


def plan(
    model: Annotated[
        str, typer.Option("--model", "-m", help="svd, svd-xt, svd-xt-1.1, tiny, or a local diffusers folder.")
    ] = "svd-xt",
    frames: Annotated[
        int | None, typer.Option("--frames", help="Frames [default: the model's].", show_default=False)
    ] = None,
    size: Annotated[str, typer.Option("--size", help="WIDTHxHEIGHT.")] = "1024x576",
    dtype: Annotated[str, typer.Option("--dtype", help="fp16, bf16 or fp32.")] = "fp16",
    steps: Annotated[
        int | None, typer.Option("--steps", help="Denoising steps [default: the model's].", show_default=False)
    ] = None,
    vram: Annotated[
        float | None,
        typer.Option(
            "--vram",
            help="A card's memory in GB, for auto's pick [default: this GPU's free memory].",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """Simulate every memory profile and diffusers' recipes: peak VRAM, FLOPs, GPU time floors. No GPU, no weights."""
    from ..errors import OptionError
    from ..options import BY_NAME, check, check_size, parse_size
    from ..planning.simulate import CUDA_CONTEXT_BYTES, plan_report

    if dtype not in ("fp16", "bf16", "fp32"):
        raise OptionError("dtype", dtype, "choose fp16, bf16 or fp32.", allowed=("fp16", "bf16", "fp32"))
    check(BY_NAME["frames"], frames)
    check(BY_NAME["steps"], steps)
    if vram is not None and vram <= 0:
        raise OptionError("vram", vram, "give the card's memory in GB, e.g. 8.")
    width, height = parse_size(size)
    check_size((width, height))
    free = int(vram * 2**30) - CUDA_CONTEXT_BYTES if vram is not None else _free_cuda_memory()
    from .terminal import PlainProgress

    progress = PlainProgress(words)  # stderr: an uncached row takes seconds to minutes
    report = plan_report(
        model, frames=frames, size=(width, height), dtype=dtype, steps=steps, free_bytes=free, progress=progress
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
    table = Table(title=f"svd plan: {model}", box=None, pad_edge=False)
    for header in headers:
        left = header in ("row", "savers")
        table.add_column(header, justify="left" if left else "right", no_wrap=header != "savers")
    for row in rows:
        table.add_row(*row)
    lines = [table, *(["savers:", *savers] if piped else []), *(words(note) for note in notes)]
    if report.free_bytes is None:
        lines.append("No CUDA GPU here: pass --vram GB to see what --memory auto would pick.")
    _print(lines, piped)


def _print(renderables: list, piped: bool) -> None:
    """On a terminal, at its width; piped, plain text wrapped at 80 columns with no trailing padding."""
    from rich.console import Console

    from .terminal import out_console

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
