"""`svd check`: where did a video come from? Its content credentials and its invisible watermark, read back."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SvdError, UsageError
from ..io.credentials import Credentials, carries_credentials, read_credentials, recipe_digest
from ..io.safety import changed_since_written, recipe_for, sidecar_path
from ..options import FORMATS
from ..stages.watermark import BITS, WatermarkReport, read_watermark
from .common import Debug, words

VIDEO_SUFFIXES = tuple(f".{fmt}" for fmt in FORMATS if fmt != "frames")  # the formats that are one file
PROVES = "a credential proves the file is unchanged since it was signed, not who made it"


def check(
    videos: Annotated[
        list[str],
        typer.Argument(
            metavar="VIDEO...", help="Videos (MP4, GIF, WebM), folders of them, or globs.", show_default=False
        ),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per video.")] = False,
    debug: Debug = False,
) -> None:
    """Say for each video whether it carries content credentials (who signed them, what they say it was made from,
    whether the file changed since) and svd's invisible watermark, and whether it is still the file its recipe
    records.

    Exit code 0 if every video carries valid credentials or the watermark (and none carries credentials that no
    longer match it, or differs from the size and SHA-256 its recipe records), 1 otherwise, 2 if one cannot be
    read. A credential signed with svd's local certificate proves the file is unchanged since it was signed, not
    who made it."""
    code = 0
    for path in _expand(videos):
        try:
            credentials = read_credentials(path) if carries_credentials(path) else None
            watermark = read_watermark(path)
        except (SvdError, OSError) as exc:
            if debug:
                raise
            message = words(exc.marked()) if isinstance(exc, SvdError) else f"{path}: cannot be read ({exc})"
            if json_out:
                print(json.dumps({"path": str(path), "error": message}), flush=True)
            print(f"svd: error: {message}", file=sys.stderr)
            code = 2
            continue
        credentials = credentials or Credentials("none")
        fmt = "frames" if path.is_dir() else path.suffix.lower().lstrip(".")
        beside = sidecar_path(path, fmt).is_file()
        recipe = recipe_for(path, fmt) if beside else None
        signed_recipe = _signed_recipe_state(recipe, credentials) if beside else None
        file = _file_state(path, recipe)
        tampered = credentials.state == "invalid" or file == "changed"
        carries = not tampered and (credentials.state in ("valid", "trusted") or watermark.carries)
        if not carries:
            code = max(code, 1)
        if json_out:
            report = {"path": str(path), "carries": carries, "credentials": credentials.as_dict(),
                      "watermark": watermark.as_dict(), "recipe": signed_recipe, "file": file}  # fmt: skip
            print(json.dumps(report), flush=True)
        else:
            print(f"{'✓' if carries else '✗'} {path}", flush=True)
            print(f"  credentials: {_credentials_line(credentials, signed_recipe)}", flush=True)
            print(f"  watermark: {_watermark_line(watermark)}", flush=True)
            print(f"  recipe: {_file_line(path, fmt, recipe, file)}", flush=True)
    raise typer.Exit(code)


def _expand(arguments: list[str]) -> list[Path]:
    """Files as given, the videos in a folder (by name), and globs (expanded here too, for shells that do not)."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir() and not sidecar_path(path, "frames").is_file():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        elif not path.exists() and glob.has_magic(argument):
            paths += sorted(Path(p) for p in glob.glob(argument, recursive=True))
        elif not path.exists():
            raise UsageError(f"{path}: no such file or folder; give videos, folders of them or globs.", path=path)
        else:
            paths.append(path)
    if not paths:
        raise UsageError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {' '.join(arguments)}.")
    return paths


def _signed_recipe_state(recipe: dict | None, credentials: Credentials) -> str | None:
    """Whether the recipe beside the video (None: not svd's recipe for it) is the one its credentials were signed
    with: matches, differs, or None (nothing signed)."""
    signed = credentials.generation.get("recipe_sha256")
    if signed is None:
        return None
    return "matches" if recipe is not None and recipe_digest(recipe) == signed else "differs"


def _file_state(path: Path, recipe: dict | None) -> str | None:
    """Whether the video is the file its recipe records (size and SHA-256, issue 33): unchanged or changed; None
    without svd's recipe beside it, or with one from before svd recorded them."""
    if recipe is None or "sha256" not in recipe["output"]:
        return None
    return "changed" if changed_since_written(path, recipe) else "unchanged"


def _file_line(path: Path, fmt: str, recipe: dict | None, file: str | None) -> str:
    sidecar = sidecar_path(path, fmt).name
    if file == "unchanged":
        return f"{sidecar} records this file as svd wrote it (its size and SHA-256)"
    if file == "changed":
        return f"{sidecar} records another size or SHA-256: the file changed since svd wrote it"
    if recipe is not None:
        return f"{sidecar} records no size or SHA-256 (an older svd wrote it)"
    return "none of svd's beside it"


def _credentials_line(credentials: Credentials, recipe: str | None) -> str:
    if credentials.state == "none":
        return "none"
    if credentials.state == "invalid":
        failed = ", ".join(credentials.failures) or "unreadable manifest"
        return f"present but no longer match the file: it changed since it was signed ({failed})"
    signer = f"signed by {credentials.signer or 'an unnamed signer'}"
    if credentials.by_this_machine:
        signer += " with this machine's svd certificate"
    elif credentials.state == "valid":
        signer += f" ({credentials.issuer or 'unknown issuer'}, on no trust list this machine knows)"
    action = (credentials.action or "made").removeprefix("c2pa.")
    model = credentials.generation.get("model", {}).get("name")
    said = f"{action}" + (f" from {credentials.made_from}" if credentials.made_from else "")
    said += f" with {model}" if model else ""
    beside = {"matches": "; the recipe beside it is the one signed", "differs": "; the recipe beside it differs"}
    frames = f" (each of its {credentials.frames} frames)" if credentials.frames else ""
    return f"valid{frames}, unchanged since signed; {signer}; says: {said}{beside.get(recipe, '')} ({PROVES})"


def _watermark_line(report: WatermarkReport) -> str:
    if report.reason is not None:
        return f"none ({report.reason})"
    found = "found" if report.carries else "not found"
    return f"{found} (message {report.message_match}/{len(BITS)} bits)"


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(check)
