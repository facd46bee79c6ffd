"""The `svd` command line: parses options, hands them to the library, words what comes back.

Nothing heavy is imported at module level (no torch, no diffusers), so `svd --help` and `svd weights list`
start instantly. The library's errors carry fields and refer to settings by name; this layer spells them as
flags (`--motion-bucket`) and prints one line. Tracebacks need `--debug`. Exit codes: 0 success (or
everything skipped), 1 a runtime failure or a failed input, 2 a usage error, 130 interrupted.

One module per command group: animate.py (generated from the option schema), finish.py (drafts made final),
weights.py, config.py,
machine.py (doctor, bench), plan.py (the GPU simulation), watermark.py (does a video carry the provenance mark),
check.py (a video's content credentials and watermark);
common.py holds the shared option declarations and the wording.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .._version import __version__
from ..errors import SvdError, first_line
from .common import click_message, spell

app = typer.Typer(
    name="svd",
    help="Animate a photo into a short video with Stable Video Diffusion, on your own GPU.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


from . import animate, check, config, finish, inpaint, machine, plan, watermark, weights  # noqa: E402  (each registers)

animate.register(app)
finish.register(app)
inpaint.register(app)
weights.register(app)
config.register(app)
machine.register(app)
plan.register(app)
watermark.register(app)
check.register(app)


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
        result = command.main(args=argv, prog_name="svd", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:  # typer.Abort (Ctrl-C at a prompt) is an Exit with code 1 in typer >= 0.20
        return 130 if isinstance(exc, typer.Abort) else exc.exit_code
    except SystemExit as exc:  # typer's completion helpers exit directly
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("svd: interrupted.", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # click's usage errors: a mistake on the command line, never a bug
        print(f"svd: error: {click_message(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except SvdError as exc:
        if debug:
            raise
        print(f"svd: error: {exc.render(spell)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # the last line of defence: one sentence, no traceback
        if debug:
            raise
        print(
            f"svd: unexpected error: {type(exc).__name__}: {first_line(exc)} "
            "(run again with --debug for the traceback, and please report it).",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
