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
from ..io.safety import recipe_for, sidecar_path
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
    whether the file changed since) and svd's invisible watermark.

    Exit code 0 if every video carries valid credentials or the watermark (and none carries credentials that no
    longer match it), 1 otherwise, 2 if one cannot be read. A credential signed with svd's local certificate proves
    the file is unchanged since it was signed, not who made it."""
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
        recipe = _recipe_state(path, credentials)
        tampered = credentials.state == "invalid"
        carries = not tampered and (credentials.state in ("valid", "trusted") or watermark.carries)
        if not carries:
            code = max(code, 1)
        if json_out:
            report = {"path": str(path), "carries": carries, "credentials": credentials.as_dict(),
                      "watermark": watermark.as_dict(), "recipe": recipe}  # fmt: skip
            print(json.dumps(report), flush=True)
        else:
            print(f"{'✓' if carries else '✗'} {path}", flush=True)
            print(f"  credentials: {_credentials_line(credentials, recipe)}", flush=True)
            print(f"  watermark: {_watermark_line(watermark)}", flush=True)
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


def _recipe_state(path: Path, credentials: Credentials) -> str | None:
    """Whether the recipe beside the video is the one its credentials were signed with: matches, differs (or is not
    svd's recipe for it), or None (none beside it, or nothing signed)."""
    signed = credentials.generation.get("recipe_sha256")
    fmt = "frames" if path.is_dir() else path.suffix.lower().lstrip(".")
    if signed is None or not sidecar_path(path, fmt).is_file():
        return None
    recipe = recipe_for(path, fmt)
    return "matches" if recipe is not None and recipe_digest(recipe) == signed else "differs"


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
