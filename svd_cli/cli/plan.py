"""`svd plan`: every memory profile and diffusers' own recipes, simulated on fake tensors (no GPU, no weights)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import Debug, JsonOut, words


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
    from ..memory.simulate import CUDA_CONTEXT_BYTES, plan_report
    from ..options import BY_NAME, check, check_size, parse_size

    if dtype not in ("fp16", "bf16", "fp32"):
        raise OptionError("dtype", dtype, "choose fp16, bf16 or fp32.", allowed=("fp16", "bf16", "fp32"))
    check(BY_NAME["frames"], frames)
    check(BY_NAME["steps"], steps)
    if vram is not None and vram <= 0:
        raise OptionError("vram", vram, "give the card's memory in GB, e.g. 8.")
    width, height = parse_size(size)
    check_size((width, height))
    free = int(vram * 2**30) - CUDA_CONTEXT_BYTES if vram is not None else _free_cuda_memory()
    report = plan_report(model, frames=frames, size=(width, height), dtype=dtype, steps=steps, free_bytes=free)
    if json_out:
        print(json.dumps(report.as_json(), indent=2))
        return
    from rich.table import Table

    from .terminal import out_console

    headers, rows, notes = report.table()
    table = Table(title=f"svd plan: {model}", box=None, pad_edge=False)
    for header in headers:
        table.add_column(header, justify="left" if header in ("row", "savers") else "right")
    for row in rows:
        table.add_row(*row)
    console = out_console()
    console.print(table)
    for note in notes:
        console.print(words(note), markup=False)
    if report.free_bytes is None:
        console.print("No CUDA GPU here: pass --vram GB to see what --memory auto would pick.", markup=False)


def _free_cuda_memory() -> int | None:
    import torch

    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None


def register(app: typer.Typer) -> None:
    app.command()(plan)
