"""`svd doctor` and `svd bench`: what this machine offers, and how fast svd runs on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..bench import run_bench
from ..doctor import collect
from ..errors import OptionError
from ..memory import gib
from ..options import check_size, parse_size
from .common import Debug, JsonOut, words
from .terminal import PlainProgress, out_console, render_doctor


def doctor(json_out: JsonOut = False, debug: Debug = False) -> None:
    """Check this machine: torch, GPU and free memory, attention kernels, ffmpeg, profiles, weights."""

    report = collect()
    if json_out:
        print(json.dumps(report, indent=2, default=str))
    else:
        render_doctor(report)
    if report.get("install_problems"):
        raise typer.Exit(1)


def bench(
    arch: Annotated[
        str, typer.Option("--arch", help="Architecture to build with random weights: svd-xt, svd or tiny.")
    ] = "svd-xt",
    frames: Annotated[int, typer.Option("--frames", help="Frames per video.")] = 25,
    size: Annotated[str, typer.Option("--size", help="WIDTHxHEIGHT.")] = "1024x576",
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps per run.")] = 25,
    profiles: Annotated[
        str,
        typer.Option(
            "--profiles",
            help="Comma-separated rows: profiles (high), profiles with levers after a + (cache3: the feature cache, "
            "taesd: TAESD's decoder, preview: the live preview, lcm: AnimateLCM's sampler; e.g. high+cache3+taesd) "
            "and diffusers anchors.",
        ),
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

    width, height = parse_size(size)
    check_size((width, height))
    if repeat < 1:
        raise OptionError("repeat", repeat, "run the rows at least once.")
    console = out_console()
    report = run_bench(arch=arch, frames=frames, width=width, height=height, steps=steps, rows=profiles.split(","),
                       device=device, dtype=dtype, out=out, repeat=repeat, progress=PlainProgress(words))  # fmt: skip
    _print_bench_table(console, report)


def _print_bench_table(console, report: dict) -> None:
    from rich.table import Table

    cuda = report["device_type"] == "cuda"
    title = (
        f"svd bench on {report['device']} ({report['arch']}, {report['frames']} frames "
        f"{report['width']}x{report['height']}, {report['steps']} steps, {report['dtype']})"
    )
    memory_columns = ["peak_allocated_bytes", "peak_reserved_bytes"] if cuda else ["peak_rss_bytes"]
    repeated = report.get("repeat", 1) > 1
    total = ["total s (median)", "total s (min)"] if repeated else ["total s"]
    headers = ["row", "s/step", *total, *(c.removesuffix("_bytes").replace("_", " ") for c in memory_columns)]
    ratios = ["time vs diffusers (median)", "time vs diffusers (min)"] if repeated else ["time vs diffusers"]
    table = Table(title=title)
    for header in [*headers, *ratios, "memory vs diffusers"]:
        table.add_column(header, justify="left" if header == "row" else "right")

    def fmt(value, pattern: str) -> str:
        return "-" if value is None else pattern.format(value)

    for r in report["rows"]:
        cells = [r["row"], fmt(r.get("seconds_per_step"), "{:.3f}"), fmt(r.get("seconds"), "{:.2f}")]
        cells += [fmt(r.get("seconds_min"), "{:.2f}")] if repeated else []
        cells += ["-" if r.get(c) is None else gib(r[c]) for c in memory_columns]
        cells += [fmt(r.get("time_vs_diffusers"), "{:.2f}x")]
        cells += [fmt(r.get("time_vs_diffusers_min"), "{:.2f}x")] if repeated else []
        cells += [fmt(r.get("memory_vs_diffusers"), "{:.2f}x")]
        table.add_row(*cells)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
    app.command()(bench)
