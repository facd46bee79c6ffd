"""`svd watermark check`: does a video carry the invisible provenance watermark svd puts in every frame?"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SvdError
from ..stages.watermark import BITS, read_watermark
from .common import Debug, words

watermark_app = typer.Typer(
    help="The invisible watermark in svd's videos: the fixed 48-bit message Stability's reference scripts embed "
    "(invisible-watermark, method dwtDct), in every frame, so anyone can tell a video was generated. It cannot be "
    "seen, survives svd's MP4 (H.264) and GIF files but not its WebM ones, and can be removed by heavy editing "
    "(rescaling, cropping, strong recompression).",
    no_args_is_help=True,
)


@watermark_app.command("check")
def watermark_check(
    videos: Annotated[
        list[Path],
        typer.Argument(metavar="VIDEO...", help="Videos (MP4, WebM, GIF), pictures, or folders of PNG frames."),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per file.")] = False,
    debug: Debug = False,
) -> None:
    """Report whether each video carries the watermark, read back from the encoded file as a player decodes it.

    Exit code 0 if every file carries it, 1 if one does not, 2 if one cannot be read.
    """

    code = 0
    for video in videos:
        try:
            report = read_watermark(video)
        except SvdError as exc:
            if debug:
                raise
            message = words(exc.marked())
            if json_out:
                print(json.dumps({"path": str(video), "error": message}), flush=True)
            print(f"svd: error: {message}", file=sys.stderr)
            code = max(code, exc.exit_code)
            continue
        if not report.carries:
            code = max(code, 1)
        print(json.dumps(report.as_dict()) if json_out else _line(video, report), flush=True)
    raise typer.Exit(code)


def _line(video: Path, report) -> str:

    if report.reason is not None:
        return f"{video}: no watermark: {report.reason}"
    share = f"{report.bit_accuracy:.0%} of bits match"
    counted = f"{report.frames_marked} of {report.frames} frame{'s' if report.frames != 1 else ''}"
    if report.carries:
        return f"{video}: carries the watermark ({counted}, {share}; message {report.message_match}/{len(BITS)} bits)"
    return (f"{video}: no watermark found ({counted}; {share}, chance is 50%; "
            f"message {report.message_match}/{len(BITS)} bits)")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(watermark_app, name="watermark")
