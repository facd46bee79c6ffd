"""`svd weights list|pull|path|verify`: what is known, fetching it, where it is, whether it is whole."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..models.sources import disk_size, import_single_file, resolve_model, verify_models, weights_status
from ..progress import size_text
from .common import Debug, JsonOut, Quiet, words
from .terminal import make_progress, out_console

weights_app = typer.Typer(help="List, download and locate model weights.", no_args_is_help=True)


@weights_app.command("list")
def weights_list(json_out: JsonOut = False, debug: Debug = False) -> None:
    """The models svd knows: frames, size on disk, downloaded or not."""

    rows = weights_status()
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("name", "frames", "size", "on disk", "gated", "repo"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        if r["downloaded"]:
            size, state = size_text(r["size_bytes"]), "yes"
        else:
            size, state = (f"~{size_text(r['download_gb'] * 1e9)}" if r["download_gb"] else "-"), "no"
        table.add_row(r["name"], str(r["frames"] or "-"), size, state, "yes" if r["gated"] else "", r["repo"])
    out_console().print(table)


@weights_app.command("pull")
def weights_pull(
    name: Annotated[str, typer.Argument(help="A model name from `svd weights list`, or a Hub repo id.")],
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Download a model's fp16 safetensors, or check a downloaded one and fetch its damaged or missing files."""

    source = resolve_model(name, progress=make_progress(quiet, words), repair=True)
    if not quiet:
        print(f"{source.name} is ready: {source.path} ({size_text(disk_size(source.path))})", file=sys.stderr)


@weights_app.command("verify")
def weights_verify(
    name: Annotated[
        str | None, typer.Argument(help="A model name, folder or Hub repo id [default: every model on disk].")
    ] = None,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """Check that a model's weights files are whole (sizes, headers and hashes), without downloading anything."""

    rows = verify_models(name)
    if json_out:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            if row["problems"]:
                for problem in row["problems"]:
                    print(f"✗ {row['name']}: {words(problem)}", file=sys.stderr)
            else:
                print(f"✓ {row['name']}: every weights file is whole ({row['path']})", file=sys.stderr)
        if not rows:
            print("No model is on this machine yet.", file=sys.stderr)
    raise typer.Exit(1 if any(row["problems"] for row in rows) else 0)


@weights_app.command("import")
def weights_import(
    path: Annotated[Path, typer.Argument(help="A single-file SVD checkpoint (e.g. svd_xt.safetensors).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name to use with --model [default: the file's stem].")
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Convert a single-file checkpoint once and keep it in diffusers layout (fp16) in svd's cache; later runs
    with --model FILE or --model NAME load that copy, which is faster."""

    if not path.is_file():
        raise UsageError(f"{path}: no such file.")
    folder = import_single_file(path, name, make_progress(quiet, words))
    print(folder)


@weights_app.command("path")
def weights_path(
    name: Annotated[str, typer.Argument(help="A model name from `svd weights list`.")], debug: Debug = False
) -> None:
    """Print the local folder of a downloaded model."""

    print(resolve_model(name, download=False).path)


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
