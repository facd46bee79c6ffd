"""The `svd` command line: parses options and hands them to the library; prints what comes back.

Nothing heavy is imported at module level (no torch, no diffusers), so `svd --help` and `svd weights list`
start instantly. Every failure the user can act on is printed as one line; tracebacks need `--debug`.
Exit codes: 0 success (or everything skipped), 1 a runtime failure or a failed input, 2 a usage error,
130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from . import _click as click
from ._version import __version__
from .config import env_var
from .errors import SvdError, UsageError

app = typer.Typer(
    name="svd",
    help="Animate a photo into a short video with Stable Video Diffusion, on your own GPU.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(help="List, download and locate model weights.", no_args_is_help=True)
config_app = typer.Typer(help="Show the settings svd animate would use, and where each comes from.")
app.add_typer(weights_app, name="weights")
app.add_typer(config_app, name="config")


def _opt(*names: str, help: str, env: str | None = None, **kw):
    """A typer Option that also reads SVD_<OPTION> from the environment."""
    option = env or names[0].lstrip("-").split("/")[0]
    return typer.Option(*names, help=help, envvar=env_var(option), show_envvar=True, **kw)


def _version(value: bool) -> None:
    if value:
        print(f"svd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """svd: Stable Video Diffusion image-to-video."""


# --- svd animate -----------------------------------------------------------------------------------------


@app.command(no_args_is_help=True)
def animate(
    ctx: typer.Context,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files, folders, globs, or - to read paths from stdin (one per line).", show_default=False
        ),
    ] = None,
    model: Annotated[
        str,
        _opt(
            "--model",
            "-m",
            help="A model name (svd, svd-xt, svd-xt-1.1, tiny), a local diffusers folder, or a Hub repo id.",
        ),
    ] = "svd-xt",
    frames: Annotated[
        int | None,
        _opt("--frames", help="Frames to generate [default: the model's: 14 svd, 25 svd-xt].", show_default=False),
    ] = None,
    fps: Annotated[
        int | None,
        _opt(
            "--fps",
            help="3-30: the fps the model is conditioned on and the video's frame rate [default: the model's, 7].",
            show_default=False,
        ),
    ] = None,
    motion_bucket: Annotated[
        int | None, _opt("--motion-bucket", help="0-255: amount of motion [default: 127].", show_default=False)
    ] = None,
    noise_aug: Annotated[
        float, _opt("--noise-aug", help="Noise added to the conditioning image; more gives more motion, less likeness.")
    ] = 0.02,
    steps: Annotated[
        int | None, _opt("--steps", help="Denoising steps [default: the model's, 25].", show_default=False)
    ] = None,
    min_cfg: Annotated[float, _opt("--min-cfg", help="Guidance scale of the first frame.")] = 1.0,
    max_cfg: Annotated[float, _opt("--max-cfg", help="Guidance scale of the last frame.")] = 3.0,
    seed: Annotated[
        int | None,
        _opt("--seed", help="Random seed [default: a new random seed, printed and recorded].", show_default=False),
    ] = None,
    seeds: Annotated[
        str | None, _opt("--seeds", help="Several seeds, one video each: --seeds 1,2,3.", show_default=False)
    ] = None,
    variations: Annotated[
        int | None, _opt("--variations", help="N videos per image with different seeds.", show_default=False)
    ] = None,
    size: Annotated[
        str | None,
        _opt(
            "--size",
            help="WIDTHxHEIGHT, multiples of 64 [default: 1024x576, or 576x1024 for portrait inputs].",
            show_default=False,
        ),
    ] = None,
    fit: Annotated[str, _opt("--fit", help="How the image fills --size: crop (centred), pad or stretch.")] = "crop",
    background: Annotated[
        str, _opt("--background", help="Colour behind transparent pixels and --fit pad borders.")
    ] = "white",
    out: Annotated[
        str | None,
        _opt(
            "--out",
            "-o",
            help="Output file, or folder (mirrors input folders; end it with /) [default: next to each input].",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        _opt(
            "--name",
            help="Name template: {stem} {seed} {index} {model} {fps} {frames} [default: {stem}; {stem}-{seed} "
            "with several seeds].",
            show_default=False,
        ),
    ] = None,
    format: Annotated[
        str, _opt("--format", "-f", help="mp4 (H.264), gif, webm (VP9), or frames (a folder of PNGs).")
    ] = "mp4",
    recursive: Annotated[bool, _opt("--recursive", "-r", help="Descend into sub-folders of folder inputs.")] = False,
    overwrite: Annotated[
        bool, _opt("--overwrite", help="Redo outputs that already exist (default: skip finished ones).")
    ] = False,
    memory: Annotated[
        str, _opt("--memory", help="auto, high, balanced, low or min: how hard to save GPU memory (see README).")
    ] = "auto",
    device: Annotated[str, _opt("--device", help="auto, cuda, cpu or mps.")] = "auto",
    dtype: Annotated[str, _opt("--dtype", help="auto (fp16 on GPUs, fp32 on CPU), fp16, bf16 or fp32.")] = "auto",
    decode_chunk: Annotated[
        int | None,
        _opt("--decode-chunk", help="Frames per VAE decode call [default: from --memory].", show_default=False),
    ] = None,
    vae_tiling: Annotated[
        bool | None,
        _opt(
            "--vae-tiling/--no-vae-tiling",
            help="Seam-free tiled VAE [default: from --memory].",
            env="vae_tiling",
            show_default=False,
        ),
    ] = None,
    attention: Annotated[str, _opt("--attention", help="auto, sdpa, sliced or xformers.")] = "auto",
    recipe: Annotated[
        Path | None,
        _opt(
            "--recipe",
            help="Repeat the run recorded in a sidecar .json (flags you give still win).",
            show_default=False,
        ),
    ] = None,
    json_lines: Annotated[
        bool, _opt("--json", help="Print one JSON object per video, then a summary, on stdout.", env="json")
    ] = False,
    quiet: Annotated[bool, _opt("--quiet", "-q", help="Print only errors.")] = False,
    debug: Annotated[bool, _opt("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Animate images into videos."""
    from . import batch
    from .settings import AnimateRequest, parse_seeds, parse_size, validate
    from .terminal import err_console, make_progress

    req = AnimateRequest(
        inputs=list(inputs or []),
        model=model,
        frames=frames,
        fps=fps,
        motion_bucket=motion_bucket,
        noise_aug=noise_aug,
        steps=steps,
        min_cfg=min_cfg,
        max_cfg=max_cfg,
        seed=seed,
        seeds=parse_seeds(seeds) if seeds else None,
        variations=variations,
        size=parse_size(size) if size else None,
        fit=fit,
        background=background,
        out=Path(out) if out else None,
        out_is_folder=bool(out) and out.endswith(("/", "\\")),
        name=name,
        format=format,
        recursive=recursive,
        overwrite=overwrite,
        device=device,
        dtype=dtype,
        decode_chunk=decode_chunk,
        memory=memory,
        attention=attention,
        vae_tiling=vae_tiling,
    )
    if recipe is not None:
        _apply_recipe(req, recipe, ctx)
    if req.out is not None and "format" not in _explicit(ctx) and req.out.suffix.lower() in (".gif", ".webm"):
        req.format = req.out.suffix.lower()[1:]
    validate(req)
    plan = batch.plan_jobs(req)

    progress = make_progress(quiet)
    console = err_console()
    summary = batch.Summary()

    def report(result: batch.JobResult) -> None:
        if json_lines:
            print(json.dumps(result.as_json()), flush=True)
        if result.status == "failed":
            console.print(f"[red]✗[/] {result.reason}" if not quiet else result.reason, markup=not quiet)
        elif quiet:
            return
        elif result.status == "skipped":
            console.print(f"- skipped {result.job.output}: {result.reason}", markup=False)
        else:
            o = result.recipe["output"]
            console.print(
                f"✓ {result.job.output}  {o['frames']} frames {o['width']}x{o['height']} at {o['fps']} fps, "
                f"seed {result.job.seed}, {result.seconds:.1f} s",
                markup=False,
            )

    interrupted = False
    try:
        with _sigterm_as_interrupt():
            batch.run_jobs(req, plan, summary, progress, report, debug=debug)
    except KeyboardInterrupt:
        interrupted = True
        summary.interrupted = True
        progress.end()
    _print_summary(summary, console, json_lines, quiet)
    if interrupted:
        console.print("Interrupted: nothing was left half-written; run the same command to resume.")
    raise typer.Exit(summary.exit_code)


def _explicit(ctx: typer.Context) -> set[str]:
    """Parameters the user set by flag or environment variable (these beat a --recipe)."""
    ParameterSource = click.ParameterSource
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }


def _apply_recipe(req, path: Path, ctx: typer.Context) -> None:
    """Fill `req` from a sidecar recipe, except what the user set by flag or environment variable."""
    from .recipe import request_values

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        values = request_values(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"--recipe {path}: not a readable svd sidecar (.json written next to a video).") from None
    given = _explicit(ctx)
    for key, value in values.items():
        if key not in given and value is not None:
            setattr(req, key, value)
    if not req.inputs:
        req.inputs = [data.get("input", {}).get("path", "")]
    if "seeds" not in given and "variations" not in given:
        req.seeds = req.variations = None


def _print_summary(summary, console, json_lines: bool, quiet: bool) -> None:
    data = summary.as_json()
    if json_lines:
        print(json.dumps(data), flush=True)
    if quiet:
        return
    parts = [f"{data['done']} done", f"{data['skipped']} skipped", f"{data['failed']} failed"]
    if summary.non_images:
        parts.append(f"{summary.non_images} non-image files ignored")
    per = f", {data['seconds_per_video']:.1f} s per video" if data["seconds_per_video"] else ""
    console.print(f"{', '.join(parts)} in {data['seconds']:.1f} s{per}.", markup=False)
    failed = [r for r in summary.results if r.status == "failed"]
    if failed:
        console.print("Failed:", markup=False)
        for r in failed:
            console.print(f"  {r.reason}", markup=False)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so `kill` also removes the temporary file in progress."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, AttributeError):  # not the main thread, or no SIGTERM on this platform
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- svd weights -----------------------------------------------------------------------------------------


@weights_app.command("list")
def weights_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The models svd knows: frames, size on disk, downloaded or not."""
    from .hub import weights_status

    rows = weights_status()
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from .terminal import out_console

    table = Table(box=None, pad_edge=False)
    for col in ("name", "frames", "size", "on disk", "gated", "repo"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        if r["downloaded"]:
            size, state = f"{r['size_bytes'] / 1e9:.2f} GB", "yes"
        else:
            size, state = (f"~{r['download_gb']:.1f} GB" if r["download_gb"] else "-"), "no"
        table.add_row(r["name"], str(r["frames"]), size, state, "yes" if r["gated"] else "", r["repo"])
    out_console().print(table)


@weights_app.command("pull")
def weights_pull(
    name: Annotated[str, typer.Argument(help="A model name from `svd weights list`, or a Hub repo id.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Download a model's fp16 safetensors; run it again after an interruption to fetch what is missing."""
    from .hub import disk_size, resolve_model
    from .terminal import make_progress

    source = resolve_model(name, progress=make_progress(quiet))
    if not quiet:
        print(f"{source.name} is ready: {source.path} ({disk_size(source.path) / 1e9:.2f} GB)", file=sys.stderr)


@weights_app.command("path")
def weights_path(name: Annotated[str, typer.Argument(help="A model name from `svd weights list`.")]) -> None:
    """Print the local folder of a downloaded model."""
    from .hub import resolve_model

    print(resolve_model(name, download=False).path)


# --- svd config ------------------------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The effective `svd animate` settings and where each comes from (flag > env > config file > default)."""
    from .config import effective_settings

    command = typer.main.get_command(app).commands["animate"]
    options = [(p.opts[0], p.name, p.envvar, p.default) for p in command.params if click.is_option(p)]
    rows = effective_settings([o for o in options if o[1] != "recipe"])
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
        return
    from rich.table import Table

    from .terminal import out_console

    table = Table(box=None, pad_edge=False)
    for col in ("option", "value", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["option"], "" if r["value"] is None else str(r["value"]), r["source"])
    out_console().print(table)


# --- svd doctor / svd bench ------------------------------------------------------------------------------


@app.command()
def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Check this machine: torch, GPU and free memory, attention kernels, ffmpeg, profiles, weights."""
    from .doctor import collect, render

    report = collect()
    if json_out:
        print(json.dumps(report, indent=2, default=str))
    else:
        render(report)


@app.command()
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
) -> None:
    """Time and measure peak memory of one generation per memory profile, and diffusers, in one process."""
    from .bench import run_bench
    from .settings import parse_size

    width, height = parse_size(size)
    if repeat < 1:
        raise UsageError(f"--repeat {repeat}: run the rows at least once.")
    run_bench(arch=arch, frames=frames, width=width, height=height, steps=steps, rows=profiles.split(","),
              device=device, dtype=dtype, out=out, repeat=repeat)  # fmt: skip


@app.command()
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
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Simulate every memory profile and diffusers' recipes: peak VRAM, FLOPs, GPU time floors. No GPU, no weights."""
    from .memory.simulate import CUDA_CONTEXT_BYTES, UnknownArchitectureError, plan_report
    from .settings import parse_size

    if dtype not in ("fp16", "bf16", "fp32"):
        raise UsageError(f"--dtype {dtype}: choose fp16, bf16 or fp32.")
    if frames is not None and not 1 <= frames <= 128:
        raise UsageError(f"--frames {frames}: choose 1 to 128.")
    free = int(vram * 2**30) - CUDA_CONTEXT_BYTES if vram is not None else _free_cuda_memory()
    try:
        report = plan_report(model, frames=frames, size=parse_size(size), dtype=dtype, steps=steps, free_bytes=free)
    except UnknownArchitectureError as exc:
        raise UsageError(
            f"--model {exc.model}: not a built-in model ({', '.join(exc.known)}) nor a local folder with "
            "a diffusers model's configs."
        ) from None
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
        console.print(note, markup=False)
    if report.free_bytes is None:
        console.print("No CUDA GPU here: pass --vram GB to see what --memory auto would pick.", markup=False)


def _free_cuda_memory() -> int | None:
    import torch

    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None


# --- entry point -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run `svd`; return (and exit with) its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SVD_DEBUG", "").lower() in ("1", "true", "yes")
    code = _run(argv, debug)
    sys.stdout.flush()
    return code


def _run(argv: list[str], debug: bool) -> int:
    import logging

    # Libraries' own warnings (huggingface-hub's retry chatter during a download) are for --debug only.
    logging.getLogger("huggingface_hub").setLevel(logging.DEBUG if debug else logging.ERROR)
    command = typer.main.get_command(app)
    try:
        default_map = _config_default_map(argv)
        result = command.main(args=argv, prog_name="svd", standalone_mode=False, default_map=default_map)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # typer's completion helpers exit directly
        return exc.code if isinstance(exc.code, int) else 0
    except typer.Abort:
        print("svd: interrupted.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("svd: interrupted.", file=sys.stderr)
        return 130
    except click.UsageError as exc:
        if debug:
            raise
        print(f"svd: error: {_click_message(exc)}", file=sys.stderr)
        return 2
    except SvdError as exc:
        if debug:
            raise
        print(f"svd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one sentence, no traceback
        if debug:
            raise
        print(
            f"svd: unexpected error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(run again with --debug for the traceback, and please report it).",
            file=sys.stderr,
        )
        return 1


def _click_message(exc) -> str:
    """One sentence for a parsing error, naming the option (and its environment variable if that was the source)."""
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        param = exc.param
        name = param.opts[0] if getattr(param, "opts", None) else param.name
        reason = str(exc.message).strip().rstrip(".")
        for pydantic, plain in (
            ("Input should be a valid integer", "expected a whole number"),
            ("Input should be a valid number", "expected a number"),
            ("Input should be a valid boolean", "expected true or false"),
        ):
            if reason.startswith(pydantic):
                reason = plain
        source = ""
        if exc.ctx is not None and exc.ctx.get_parameter_source(param.name) == click.ParameterSource.ENVIRONMENT:
            source = f" (from the environment variable {param.envvar})"
        return f"invalid value for {name}{source}: {reason}. See `svd {exc.ctx.info_name if exc.ctx else ''} --help`."
    message = " ".join(exc.format_message().split())
    return f"{message}{'' if message.endswith(('.', '?')) else '.'} See `svd --help`."


def _config_default_map(argv: list[str]) -> dict | None:
    """svd.toml values as click defaults for `svd animate` (below flags and environment variables)."""
    if "animate" not in argv:
        return None
    from .config import load_config

    command = typer.main.get_command(app).commands["animate"]
    allowed = {p.name for p in command.params if click.is_option(p)}
    values, _ = load_config(allowed)
    return {"animate": values} if values else None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
