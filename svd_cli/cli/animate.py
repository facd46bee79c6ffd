"""`svd animate`: its options are generated from the option schema (svd_cli/options.py), none written here.

The command gathers what the user gave (flags and `SVD_*` variables beat a `--recipe`, which beats
`svd.toml`), hands the request to the library's batch runner and prints each result as it comes.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .. import batch, jobs
from ..config import load_config
from ..errors import OptionError, UsageError
from ..io.recipe import read_recipe
from ..models.sources import download_size, missing_folder, on_disk
from ..options import BY_NAME, OPTIONS, assemble_request, uses_ray
from ..progress import size_text
from ..ray_executor import RayExecutor
from ..session import Session
from .common import Debug, one_line, schema_parameter, words
from .terminal import err_console, interactive, make_progress


def _signature() -> inspect.Signature:
    inputs = typer.Argument(
        help="Image files, folders, globs, or - to read paths from stdin (one per line); none with --prompt.",
        show_default=False,
    )
    recipe = typer.Option(
        "--recipe", help="Repeat the run recorded in a sidecar .json (flags you give still win).", show_default=False
    )
    kw = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature(
        [
            inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
            inspect.Parameter("inputs", kw, default=None, annotation=Annotated[list[str] | None, inputs]),
            *(schema_parameter(o) for o in OPTIONS),
            inspect.Parameter("recipe", kw, default=None, annotation=Annotated[Path | None, recipe]),
            inspect.Parameter("debug", kw, default=False, annotation=Debug),
        ]
    )


def request_from(ctx: typer.Context, params: dict[str, Any]):
    """The library request for parsed parameters: flags and variables beat a recipe, which beats svd.toml."""

    sources = {o.name: ctx.get_parameter_source(o.name).name for o in OPTIONS}
    explicit = {o.name: params[o.name] for o in OPTIONS if sources[o.name] in ("COMMANDLINE", "ENVIRONMENT")}
    config = load_config()
    for warning in config.warnings():
        print(f"svd: warning: {one_line(warning)}.", file=sys.stderr)
    config = config.values
    path = params["recipe"]
    recipe = read_recipe(path) if path is not None else None
    try:
        req = assemble_request(params["inputs"] or [], explicit=explicit, config=config, recipe=recipe,
                               recipe_path=path)  # fmt: skip
    except OptionError as exc:
        if sources.get(exc.option) != "ENVIRONMENT":
            raise
        # The value came from a variable, not a flag: name the variable, as click does for one it cannot parse.
        env_var = BY_NAME[exc.option].env_var
        message = f"{env_var}={os.environ[env_var]}: {exc.message} Fix or unset {env_var}."
        raise UsageError(message, option=exc.option, value=exc.value) from None
    if recipe is not None and "model" not in explicit:
        _confirm_recipe_download(req, path)
    return req


def origin(ctx: typer.Context, name: str) -> str | None:
    """Where an option's value was set when not by its flag: its variable, or the config file that holds it."""
    source = ctx.get_parameter_source(name).name
    if source == "ENVIRONMENT":
        return BY_NAME[name].env_var
    if source == "COMMANDLINE":
        return None
    origins = load_config().origin
    return f"{name.replace('_', '-')} in {origins[name]}" if name in origins else None


def _confirm_recipe_download(req, recipe_path: Path) -> None:
    """A recipe naming a model that is not on this machine downloads only when the user agrees."""

    if missing_folder(req.model):
        raise UsageError(
            f"--recipe {recipe_path}: its model folder {req.model} is not on this machine; choose a model with "
            "--model.",
            option="recipe",
        )
    if req.allow_download or on_disk(req.model):
        return
    size = download_size(req.model)
    about = f" (about {size_text(size * 1e9)})" if size else ""
    if interactive() and sys.stdin.isatty():
        question = (
            f"The recipe {recipe_path} uses the model {req.model}, which is not on this machine. Download it{about}?"
        )
        if typer.confirm(question, default=False, err=True):
            return
        raise UsageError(f"Not downloading {req.model}; choose a model you have with --model.")
    raise UsageError(
        f"--recipe {recipe_path}: uses the model {req.model}, which is not on this machine; add --allow-download to "
        f"download it{about}, or choose a model you have with --model.",
        option="recipe",
    )


def animate(ctx: typer.Context, **params: Any) -> None:
    """Animate images into videos."""

    req = request_from(ctx, params)

    quiet, json_lines = req.quiet, req.json
    stdout = sys.stdout  # data goes here even while Ray's messages are sent to stderr
    progress = make_progress(quiet, words)
    console = err_console()
    summary = batch.Summary()
    session = Session(req, progress)
    executor = None
    if uses_ray(req):  # Ray is checked before any work: a missing install is one line, not a traceback later
        executor = RayExecutor(req.ray_address, req.workers, debug=params["debug"],
                               address_origin=origin(ctx, "ray_address"))  # fmt: skip
    job_list = jobs.jobs_for_request(session)
    report = reporter(console, quiet, json_lines, stdout)
    interrupted = False
    try:
        with sigterm_as_interrupt():
            batch.run_jobs(session, job_list, summary, report, reraise_unexpected=params["debug"], executor=executor,
                           words=words)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        summary.interrupted = True
        progress.end()
    print_summary(summary, console, json_lines, quiet, stdout)
    if interrupted:
        console.print("Interrupted: nothing was left half-written; run the same command to resume.")
    raise typer.Exit(summary.exit_code)


def reporter(console, quiet: bool, json_lines: bool, stdout) -> Callable[[batch.JobResult], None]:
    """How each video's result is shown as it comes (`svd animate`, `svd finish`): a line, and JSON on stdout."""

    def report(result: batch.JobResult) -> None:
        data = result.as_json()
        if "error" in data or "reason" in data:
            key = "error" if "error" in data else "reason"
            data[key] = words(data[key])
        if json_lines:
            print(json.dumps(data), file=stdout, flush=True)
        if result.status == "failed":
            line = words(result.reason) + (" (run with --debug for the traceback)" if result.unexpected else "")
            line = one_line(line)
            console.print(f"[red]✗[/] {escape(line)}" if not quiet else line, markup=not quiet, highlight=False)
        elif quiet:
            return
        elif result.status == "skipped":
            console.print(one_line(f"- skipped {result.job.output}: {words(result.reason)}"), markup=False)
        else:
            video, output = result.video, one_line(str(result.job.output))
            console.print(
                f"✓ {output}  {video.frame_count} frames {video.width}x{video.height} at {video.fps} "
                f"fps, seed {video.seed}, {result.seconds:.1f} s"
                + (f" on {result.worker['id']}" if result.worker else ""),
                markup=False,
            )

    return report


animate.__signature__ = _signature()


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(animate)


def run_and_summarise(work: Callable[[], None], summary, progress, console, json_lines: bool, quiet: bool,
                      interrupted: str) -> None:  # fmt: skip
    """A command's `work` with SIGTERM taken as Ctrl-C (`interrupted` is then said in one line), then its summary
    and its exit code (`svd finish`, `svd inpaint`)."""
    try:
        with sigterm_as_interrupt():
            work()
    except KeyboardInterrupt:
        summary.interrupted = True
        progress.end()
        console.print(interrupted)
    print_summary(summary, console, json_lines, quiet, sys.stdout)
    raise typer.Exit(summary.exit_code)


def print_summary(summary, console, json_lines: bool, quiet: bool, stdout) -> None:
    data = summary.as_json()
    if json_lines:
        print(json.dumps(data), file=stdout, flush=True)
    if quiet:
        return
    parts = [f"{data['done']} done", f"{data['skipped']} skipped", f"{data['failed']} failed"]
    if summary.non_images:
        parts.append(f"{summary.non_images} non-image files ignored")
    per = f", {data['seconds_per_video']:.1f} s per video" if data["seconds_per_video"] else ""
    console.print(f"{', '.join(parts)} in {data['seconds']:.1f} s{per}.", markup=False)
    if summary.workers is not None:
        counts = ", ".join(f"{worker} {n}" for worker, n in sorted(summary.workers.items())) or "none"
        retried = f"; {summary.retried} restarted after their worker died" if summary.retried else ""
        console.print(f"Videos per Ray worker: {counts}{retried}.", markup=False)
    failed = [r for r in summary.results if r.status == "failed"]
    if len(failed) > 1:  # one failure was just printed; a list helps only when there are several
        console.print("Failed:", markup=False)
        for r in failed:
            console.print(f"  {words(r.reason)}", markup=False)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
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
