"""`svd doctor` and `svd bench`: what this machine offers, and how fast svd runs on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import Debug, JsonOut


def doctor(json_out: JsonOut = False, debug: Debug = False) -> None:
    """Check this machine: torch, GPU and free memory, attention kernels, ffmpeg, profiles, weights."""
    from ..doctor import collect
    from .terminal import render_doctor

    report = collect()
    if json_out:
        print(json.dumps(report, indent=2, default=str))
    else:
        render_doctor(report)


def bench(
    arch: Annotated[
        str, typer.Option("--arch", help="Architecture to build with random weights: svd-xt, svd or tiny.")
    ] = "svd-xt",
    frames: Annotated[int, typer.Option("--frames", help="Frames per video.")] = 25,
    size: Annotated[str, typer.Option("--size", help="WIDTHxHEIGHT.")] = "1024x576",
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps per run.")] = 25,
    profiles: Annotated[
        str, typer.Option("--profiles", help="Comma-separated rows: profiles and diffusers anchors.")
    ] = "high,balanced,low,min,diffusers,diffusers-lowmem",
    device: Annotated[str, typer.Option("--device", help="auto, cuda, cpu or mps.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, fp16, bf16 or fp32.")] = "auto",
    repeat: Annotated[
        int, typer.Option("--repeat", help="Run all rows this many times, interleaved; report min and median.")
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write the JSON results [default: benchmarks/results/<device>.json].",
            show_default=False,
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Time and measure peak memory of one generation per memory profile, and diffusers, in one process."""
    from ..bench import run_bench
    from ..errors import OptionError
    from ..options import check_size, parse_size
    from .terminal import out_console

    width, height = parse_size(size)
    check_size((width, height))
    if repeat < 1:
        raise OptionError("repeat", repeat, "run the rows at least once.")
    run_bench(arch=arch, frames=frames, width=width, height=height, steps=steps, rows=profiles.split(","),
              device=device, dtype=dtype, out=out, repeat=repeat, console=out_console())  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(doctor)
    app.command()(bench)
